"""Every write of the approvals app and the rules that go with it (a package: ``access``,
``policies``, ``requests``, ``schedule``; import from here).

The owner of a subject (for changes: ``changes.services``) calls, in its own transaction:

- ``open_request(subject, by=)`` when the subject is submitted or edited: opens the
  request, or a new round of it when the digest changed; approved at once when no policy
  asks for anyone (``automatic``);
- ``check_may_start(subject)`` just before starting it: raises ``NotCleared`` (a
  ``DomainError``) with the reason unless the request is approved for exactly this
  digest, not expired, and no freeze window is open on its hosts (an emergency bypass
  aside); then ``record_start(request)``;
- ``approved_digest_problem(...)`` where the subject is executed (the last check);
- ``mark_missed`` / ``withdraw_subject`` when a scheduled start was missed or the subject
  was cancelled;
- ``schedule_problem(hosts, at)`` to check a planned start against the windows.

Approvals never calls back: the owner reads the request's state when it needs it.
Locking: every write to a request locks its row first (``select_for_update``), so two
approvers deciding at once are counted one after the other.
"""

from approvals.matching import HostFacts, Subject
from approvals.services.access import (
    ApprovalError,
    Frozen,
    NotCleared,
    access_request,
    can_edit_policies,
    can_edit_windows,
    can_read_setup,
    can_see_all,
    can_view,
    eligible_groups,
    group_names,
    in_group,
    is_emergency_approver,
)
from approvals.services.policies import (
    default_requirement,
    delete_policy,
    export_policies,
    import_policies,
    matching_policies,
    requirements_for,
    save_policy,
)
from approvals.services.requests import (
    approved_digest_problem,
    can_emergency,
    can_resubmit,
    can_withdraw,
    check_may_start,
    decide,
    decision_refusal,
    emergency_bypass,
    expire_due,
    has_emergency,
    inbox,
    is_met,
    mark_missed,
    open_request,
    progress,
    progress_text,
    record_start,
    request_for,
    requests_for,
    resubmit,
    review_bypass,
    review_list,
    standing,
    timeline,
    withdraw,
    withdraw_subject,
)
from approvals.services.schedule import (
    CONFLICT_WINDOW,
    WINDOW_FIELDS,
    active_freezes,
    calendar,
    delete_window,
    freeze_message,
    save_window,
    schedule_problem,
)

__all__ = [
    "CONFLICT_WINDOW", "WINDOW_FIELDS", "ApprovalError", "Frozen", "HostFacts", "NotCleared",
    "Subject", "access_request", "active_freezes", "approved_digest_problem", "calendar",
    "can_edit_policies", "can_edit_windows", "can_emergency", "can_read_setup", "can_resubmit",
    "can_see_all", "can_view", "can_withdraw", "check_may_start", "decide", "decision_refusal",
    "default_requirement", "delete_policy", "delete_window", "eligible_groups",
    "emergency_bypass", "expire_due", "export_policies", "freeze_message", "group_names",
    "has_emergency", "import_policies", "in_group", "inbox", "is_emergency_approver", "is_met",
    "mark_missed", "matching_policies", "open_request", "progress", "progress_text",
    "record_start", "request_for", "requests_for", "requirements_for", "resubmit",
    "review_bypass", "review_list", "save_policy", "save_window", "schedule_problem",
    "standing", "timeline", "withdraw", "withdraw_subject",
]
