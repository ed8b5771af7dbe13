"""Secret redaction: a corpus of fake secrets that must be masked and ordinary text that must pass untouched."""

from __future__ import annotations

import pytest

from kimi_nb.redact import Secret, find_secrets, placeholder, redact

FAKE = "A1b2C3d4E5f6G7h8"  # 16 characters of fake key material

# (text, the secret inside it, the kind it is reported as)
POSITIVE = [
    (f"client = OpenAI(api_key=sk-proj-{FAKE}{FAKE}_x-y)", f"sk-proj-{FAKE}{FAKE}_x-y", "openai-key"),
    (f"OPENAI_API_KEY=sk-{FAKE}T3BlbkFJ{FAKE}", f"sk-{FAKE}T3BlbkFJ{FAKE}", "api-key"),
    (f"moonshot key: sk-{FAKE}{FAKE}{FAKE}", f"sk-{FAKE}{FAKE}{FAKE}", "api-key"),
    (f"sk-svcacct-{FAKE}{FAKE}", f"sk-svcacct-{FAKE}{FAKE}", "openai-key"),
    (f"anthropic.Anthropic(api_key='sk-ant-api03-{FAKE}{FAKE}-{FAKE}AA')", f"sk-ant-api03-{FAKE}{FAKE}-{FAKE}AA",
     "anthropic-key"),
    (f"stripe.api_key = 'sk_live_{FAKE}{FAKE}'", f"sk_live_{FAKE}{FAKE}", "stripe-key"),
    (f"rk_test_{FAKE}abcd", f"rk_test_{FAKE}abcd", "stripe-key"),
    (f"git clone https://ghp_{FAKE}{FAKE}abcd@github.com/o/r", f"ghp_{FAKE}{FAKE}abcd", "github-token"),
    (f"GH_TOKEN gho_{FAKE}{FAKE}wxyz", f"gho_{FAKE}{FAKE}wxyz", "github-token"),
    (f"github_pat_11ABCDEFG0{FAKE}_{FAKE}{FAKE}", f"github_pat_11ABCDEFG0{FAKE}_{FAKE}{FAKE}", "github-token"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws-access-key"),
    ("key ASIA1234567890ABCDEF in logs", "ASIA1234567890ABCDEF", "aws-access-key"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "secret"),
    ("SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
     "slack-token"),
    ("post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX now",
     "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "slack-webhook"),
    (f"maps(key='AIza{FAKE}{FAKE}abc')", f"AIza{FAKE}{FAKE}abc", "google-api-key"),
    (f"login(hf_{FAKE}{FAKE})", f"hf_{FAKE}{FAKE}", "huggingface-token"),
    ("cookie eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "private-key"),
    ("key = '''-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
     "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "private-key"),
    ("headers = {'Authorization': 'Bearer abc123.def456-ghi789'}", "abc123.def456-ghi789", "authorization"),
    ("curl -H \"Authorization: Basic dXNlcjpwYXNzd29yZA==\" https://x", "dXNlcjpwYXNzd29yZA==", "authorization"),
    ("> authorization: token 0123456789abcdef", "0123456789abcdef", "authorization"),
    ("send Bearer Zm9vYmFyYmF6cXV4cXV1eA== along", "Zm9vYmFyYmF6cXV4cXV1eA==", "bearer-token"),
    ("engine = create_engine('postgresql://analyst:s3cr3t-pw@db.internal:5432/sales')", "s3cr3t-pw",
     "url-password"),
    ('password = "correct horse"', None, None),  # spaces: not a token-like literal (documented limit)
    ('db_password = "Tr0ub4dor&3"', "Tr0ub4dor&3", "secret"),
    ("PASSWORD: hunter22", "hunter22", "secret"),
    ('{"client_secret": "9f8e7d6c5b4a"}', "9f8e7d6c5b4a", "secret"),
    ("export MY_SERVICE_TOKEN=abcdef123456", "abcdef123456", "secret"),
    ("https://api.example.com/v1/data?api_key=abcdef123456&page=2", "abcdef123456", "secret"),
    ("SECRET_KEY := 'django-insecure-abc123'", "django-insecure-abc123", "secret"),
    ("apiKey: 'zzzzzz111111'", "zzzzzz111111", "secret"),
    ("passwd='letmein'", "letmein", "secret"),
    ("config: password=hunter22x", "hunter22x", "secret"),
    ("settings = dict(token='abc123xyz')", "abc123xyz", "secret"),
]

NEGATIVE = [
    "import numpy as np\nx = np.arange(10)\nprint(x.sum())",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "run id 123e4567-e89b-12d3-a456-426614174000",
    "tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased')",
    "tokens = tokenizer(text)['input_ids']\nmax_tokens = 4096\nnum_tokens: 123456789",
    "pad_token = '[PAD]'\neos_token = '</s>'\nbos_token = '<|startoftext|>'",
    "api_key = os.environ['OPENAI_API_KEY']\ntoken = os.getenv('HF_TOKEN')",
    "api_key = settings.api_key\npassword = getpass.getpass()\nsecret = make_secret(16)",
    "if password == 'x': pass",
    "password = user_password\ntoken = response",
    "password: ********\napi_key='xxxxxxxx'",
    "The key insight is that sk-learn is not a package name; use scikit-learn.",
    "task-1234567890abcdefghij is a job id",
    "df.groupby('key').agg({'value': 'sum'})\nkey = 'name'",
    "Bearer tokens are described in RFC 6750.",
    "https://example.com:8080/path?q=1",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "AKIA is a prefix; AKIASHORT is not a key",
    "学习率 = 0.001  # 中文注释",
]


@pytest.mark.parametrize(("text", "secret", "kind"), POSITIVE)
def test_secrets_are_masked(text: str, secret: str | None, kind: str | None) -> None:
    out = redact(text)
    if secret is None:
        assert out == text
        return
    assert secret not in out
    assert placeholder(kind) in out
    assert out.replace(placeholder(kind), secret, 1) == text  # nothing else changed
    assert redact(out) == out  # idempotent


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert find_secrets(text) == []
    assert redact(text) == text


def test_environment_values_are_masked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "plain words here")
    monkeypatch.setenv("INTERNAL_API_KEY", "opaque-value-42")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask safely
    monkeypatch.setenv("HOME_DIR_SETTING", "opaque-value-43")  # name does not look secret
    text = "connect('plain words here') with opaque-value-42; abc; opaque-value-43"
    assert redact(text) == (
        "connect('[REDACTED:env:WAREHOUSE_PASSWORD]') with [REDACTED:env:INTERNAL_API_KEY]; abc; opaque-value-43"
    )
    monkeypatch.delenv("INTERNAL_API_KEY")  # read at call time
    assert "opaque-value-42" in redact(text)


def test_find_secrets_reports_sorted_non_overlapping_spans() -> None:
    text = f"a=sk-proj-{FAKE}{FAKE} b=ghp_{FAKE}{FAKE}abcd"
    found = find_secrets(text)
    assert [s.kind for s in found] == ["openai-key", "github-token"]
    assert all(isinstance(s, Secret) for s in found)
    assert text[found[0].start : found[0].end] == f"sk-proj-{FAKE}{FAKE}"
    assert found[0].end <= found[1].start


def test_large_text_is_handled() -> None:
    code = "x = compute(value, other)  # a comment with words\n" * 20000
    assert redact(code) == code
    assert redact(code + f"key=sk-{FAKE}{FAKE}") == code + "key=[REDACTED:api-key]"
    assert redact("") == ""
    for pathological in (".a" * 50000, "a://b:" * 20000, "http://" + "a" * 50000, "xtoken" * 50000):
        assert redact(pathological) == pathological  # bounded patterns: no catastrophic backtracking
