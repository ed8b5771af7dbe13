"""Secret detection and masking for everything kimi-nb sends to a model: provider keys, auth headers, passwords.

Rules are precise on purpose: provider keys are matched by their documented prefixes and lengths, generic
assignments only when a secret-looking name gets a literal value, so ordinary code, hashes (git SHAs,
checksums) and UUIDs pass through untouched. Values of environment variables whose names contain KEY, TOKEN,
SECRET or PASSWORD (read at call time, 8+ characters) are masked wherever they appear.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

__all__ = ["Secret", "find_secrets", "placeholder", "redact"]


@dataclass(frozen=True)
class Secret:
    """One secret found in a text: its kind (e.g. "openai-key") and its span."""

    kind: str
    start: int
    end: int


def placeholder(kind: str) -> str:
    """What a secret is replaced with."""
    return f"[REDACTED:{kind}]"


_SECRET_NAME = (
    r"(?:api[_-]?key|apikey|api[_-]?token|access[_-]?key(?:[_-]?id)?|secret[_-]?access[_-]?key|secret[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer[_-]?token|token|"
    r"secret|password|passwd|passphrase|pwd|credentials?)"
)

# Each rule marks the secret with the group "s"; only that group is masked. Order matters on overlaps:
# earlier rules win. The two generic "secret" rules match any `name = value` inside a lookahead (so a
# rejected match never hides the next one); the name is checked against _SECRET_NAME afterwards.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, flags))
    for kind, pattern, flags in (
        (
            "private-key",
            (r"(?P<s>-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
             r"(?: BLOCK)?-----|.*\Z))"),
            re.DOTALL,
        ),
        ("anthropic-key", r"(?<![\w-])(?P<s>sk-ant-[A-Za-z0-9_-]{20,})", 0),
        ("openai-key", r"(?<![\w-])(?P<s>sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,})", 0),
        ("stripe-key", r"(?<![\w-])(?P<s>[sr]k_(?:live|test)_[A-Za-z0-9]{16,})", 0),
        ("api-key", r"(?<![\w-])(?P<s>sk-[A-Za-z0-9][A-Za-z0-9_-]{19,})", 0),  # OpenAI legacy, Moonshot, DeepSeek...
        ("github-token", r"(?<!\w)(?P<s>gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", 0),
        ("aws-access-key", r"(?<![A-Za-z0-9])(?P<s>(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})(?![A-Za-z0-9])", 0),
        ("slack-token", r"(?<!\w)(?P<s>xox[abposr]-[A-Za-z0-9-]{10,})", 0),
        ("slack-webhook", r"(?P<s>https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,})", 0),
        ("google-api-key", r"(?<![\w-])(?P<s>AIza[0-9A-Za-z_-]{35})", 0),
        ("huggingface-token", r"(?<!\w)(?P<s>hf_[A-Za-z0-9]{30,})", 0),
        ("jwt", r"(?<![\w-])(?P<s>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})", 0),
        (
            "authorization",
            (r"(?:authorization|proxy-authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+"
             r"(?P<s>[A-Za-z0-9._~+/=-]{6,})"),
            re.IGNORECASE,
        ),
        ("bearer-token", r"\bBearer\s+(?P<s>[A-Za-z0-9._~+/-]{16,}=*)", 0),
        ("url-password", r"\b[a-z][a-z0-9+.-]{0,20}://[^\s:/@'\"\[]{1,100}:(?P<s>[^\s@/'\"\[\]]{3,100})@", re.IGNORECASE),
        (
            "secret",  # name = "literal" / name: 'literal' / "name": "literal"
            (r"(?<![\w.-])(?=[\"']?(?P<name>[\w.-]{3,60})[\"']?\s*(?::|=(?!=)|:=)\s*[rbuf]?(?P<q>[\"'])"
             r"(?P<s>[^\"'\s<>\[\]{}]{6,})(?P=q))"),
            re.IGNORECASE,
        ),
        (
            "secret",  # name=bare-value / name: bare-value (env files, YAML, URLs, command lines)
            (r"(?<![\w.-])(?=[\"']?(?P<name>[\w.-]{3,60})[\"']?\s*(?::|=(?!=))\s*"
             r"(?P<s>[A-Za-z0-9_+/=@!#$%^*~.-]{6,})(?![\w(\[.\"']))"),
            re.IGNORECASE,
        ),
    )
)

# Bare values that are code, not secrets: (dotted) names whose first part has no digit, numbers, constants.
_CODE_VALUE = re.compile(r"^(?:[A-Za-z_]+(?:\.[A-Za-z_]\w*)*|[\d.]+)$")
# Quoted values that are placeholders, not secrets.
_PLACEHOLDER = re.compile(r"^(?:\*+|x+|X+|\.+|REDACTED.*)$")
_SECRET_NAME_END = re.compile(_SECRET_NAME + r"$", re.IGNORECASE)
_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD", re.IGNORECASE)


@functools.lru_cache(maxsize=8)
def _env_pattern(values: tuple[tuple[str, str], ...]) -> re.Pattern[str] | None:
    if not values:
        return None
    longest_first = sorted(values, key=lambda item: -len(item[1]))
    return re.compile("|".join(re.escape(value) for _, value in longest_first))


def _env_secrets() -> tuple[tuple[str, str], ...]:
    found = {value: name for name, value in sorted(os.environ.items())
             if _ENV_NAME.search(name) and len(value) >= 8 and value.strip() == value and "\n" not in value}
    return tuple(sorted((name, value) for value, name in found.items()))


def find_secrets(text: str) -> list[Secret]:
    """The secrets in ``text``, in order, without overlaps (environment values first, then the rules)."""
    found: list[Secret] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, start: int, end: int) -> None:
        if start < end and all(end <= a or start >= b for a, b in taken):
            taken.append((start, end))
            found.append(Secret(kind, start, end))

    env = _env_secrets()
    pattern = _env_pattern(env)
    if pattern is not None:
        names = {value: name for name, value in env}
        for match in pattern.finditer(text):
            add(f"env:{names[match.group()]}", match.start(), match.end())
    for kind, rule in _RULES:
        for match in rule.finditer(text):
            value = match.group("s")
            quoted = match.groupdict().get("q")
            if kind == "secret" and (
                not _SECRET_NAME_END.search(match.group("name"))
                or _PLACEHOLDER.match(value)
                or (not quoted and _CODE_VALUE.match(value))
            ):
                continue
            add(kind, match.start("s"), match.end("s"))
    return sorted(found, key=lambda secret: secret.start)


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``[REDACTED:kind]``."""
    if not text:
        return text
    secrets = find_secrets(text)
    if not secrets:
        return text
    parts, position = [], 0
    for secret in secrets:
        parts.append(text[position : secret.start])
        parts.append(placeholder(secret.kind))
        position = secret.end
    parts.append(text[position:])
    return "".join(parts)
