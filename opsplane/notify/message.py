"""What callers hand to the outbox: a ``Message``. Plain data, no Django models.

The channel's template turns a message into the provider's text (``render.py``); the
sender wraps that text in the provider's payload (``senders.py``).
"""

from dataclasses import asdict, dataclass, field

from django.conf import settings

SEVERITIES = ("critical", "warning", "info")
# The most severe first: a digest takes the severity of its most severe member.
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Message:
    """One notification's content.

    - ``title``: one line (DingTalk's markdown title, the e-mail subject, the card header).
    - ``text``: markdown body (``**bold**``, ``[label](url)``, lists); plain text works too.
    - ``severity``: ``critical``, ``warning`` or ``info``.
    - ``link``: an absolute URL to the page the message is about (e.g. the incident).
    - ``mentions``: who to call out, in the channel's terms: mobile numbers (DingTalk,
      WeCom, SMS), user ids (Feishu ``ou_…``, Slack ``U…``, WeCom user ids), e-mail
      addresses (e-mail). Added to the channel's own configured mentions.
    - ``digest_key``: messages about the same thing (e.g. ``incident:42``) share it; when a
      storm folds messages into a digest, those with the same key become one line.
    - ``data``: extra JSON-able values the channel's template may use (alerts, labels...).
    """

    title: str
    text: str = ""
    severity: str = "info"
    link: str = ""
    mentions: tuple[str, ...] = ()
    digest_key: str = ""
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, "
                             f"not {self.severity!r}")
        # A list is accepted and kept as a tuple, so messages stay hashable-ish and frozen.
        object.__setattr__(self, "mentions", tuple(str(m) for m in self.mentions))

    def as_dict(self):
        data = asdict(self)
        data["mentions"] = list(self.mentions)
        return data

    @classmethod
    def from_dict(cls, data):
        fields = {"title", "text", "severity", "link", "mentions", "digest_key", "data"}
        return cls(**{key: value for key, value in data.items() if key in fields})


def absolute_url(link):
    """``link`` (a path) on the address people reach the web UI at (``OPSPLANE_BASE_URL``),
    for messages read outside the browser; a full URL is returned as it is."""
    base = getattr(settings, "OPSPLANE_BASE_URL", "").rstrip("/")
    return f"{base}{link}" if link.startswith("/") else link
