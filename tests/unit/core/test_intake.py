"""Intake decisions for every pure case of TESTPLAN section A."""

from __future__ import annotations

import stat

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exchange.core.intake import (
    Accepted,
    Candidate,
    CsvChecker,
    CsvHeaderChecker,
    Decision,
    FileKind,
    IntakeRules,
    Refused,
    Utf8Validator,
    check_name,
    content_checker,
    decide,
    is_candidate_name,
)
from exchange.errors import InvariantError
from exchange.model import ReasonCode

FIELDS = ("referral_id", "referral_date", "district", "age_band", "outcome")
HEADER = b"referral_id,referral_date,district,age_band,outcome"
ROW = b"R-1001,2026-01-05,Basildon,11-15,section 47"
RULES = IntakeRules(
    formats=("csv", "json", "xlsx"),
    allowed_fields=FIELDS,
    max_size_bytes=10 * 1024 * 1024,
    allow_empty=False,
)
OPEN_RULES = IntakeRules(
    formats=("csv",), allowed_fields=None, max_size_bytes=1024, allow_empty=True
)
CHUNK_SIZES = [1, 2, 3, 5, 64, 1 << 20]


def candidate(
    name: bytes | str = b"referrals.csv",
    size: int = 100,
    kind: FileKind = FileKind.REGULAR,
    nlink: int = 1,
) -> Candidate:
    return Candidate(name=name, size=size, kind=kind, nlink=nlink)


def check_csv(data: bytes, chunk_size: int, rules: IntakeRules = RULES) -> Decision:
    checker = CsvChecker(rules.allowed_fields, allow_empty=rules.allow_empty)
    for start in range(0, len(data), chunk_size):
        refused = checker.feed(data[start : start + chunk_size])
        if refused is not None:
            assert refused == checker.finish()
            return refused
    return checker.finish()


def refusal(decision: Decision, reason: ReasonCode) -> str:
    assert isinstance(decision, Refused), decision
    assert reason == decision.reason
    return decision.detail


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b".hidden.csv", b".", b"..", b"data.csv.part", b"data.csv.PART", b"data.tmp", b"~$data.xlsx"],
)
def test_hidden_and_temporary_names_are_not_candidates(name: bytes) -> None:
    """Dotfiles, .part/.tmp files and Office lock files are left alone, never taken."""
    assert not is_candidate_name(name)
    assert not is_candidate_name(name.decode())


def test_decide_on_a_non_candidate_is_a_bug() -> None:
    """Deciding on a name the watcher should have skipped raises InvariantError."""
    with pytest.raises(InvariantError):
        decide(RULES, candidate(name=b".referrals.csv"))


@pytest.mark.parametrize(
    "name",
    [
        b"referrals\n.csv",
        b"referrals\r.csv",
        b"refer\x1brals.csv",
        b"refer\x7frals.csv",
        b"-rf.csv",
        b"referrals-\xe9t\xe9.csv",  # Latin-1, not UTF-8
        "referrals\u202egpj.csv".encode(),  # right-to-left override spoofs the extension
        "refer\u200brals.csv".encode(),  # zero-width space
        "referrals\u2028.csv".encode(),  # line separator
        b"",
        b"a" * 256,
    ],
)
def test_unsafe_names_are_refused_without_echoing_them(name: bytes) -> None:
    """Control, invisible and non-UTF-8 names and a leading dash are name-unsafe; the detail
    never contains the name."""
    if name:
        assert is_candidate_name(name)
    detail = refusal(decide(RULES, candidate(name=name)), ReasonCode.NAME_UNSAFE)
    assert "referrals" not in detail and "rals" not in detail


def test_non_utf8_name_from_a_str_listing() -> None:
    """A name listed as str with surrogate escapes is judged on its original bytes."""
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")
    detail = refusal(decide(RULES, candidate(name=name)), ReasonCode.NAME_UNSAFE)
    assert "byte offset 3" in detail


def test_lone_surrogate_in_a_str_name_is_unsafe() -> None:
    """A str name holding a surrogate that is no escaped byte is refused, not crashed on."""
    assert refusal_reason(check_name("a\ud800b.csv")) == ReasonCode.NAME_UNSAFE


def refusal_reason(result: Refused | None) -> ReasonCode | None:
    return None if result is None else result.reason


@pytest.mark.parametrize(
    "name",
    [
        "referrals 2026-01.csv",
        "Référentiel données.csv",
        "データ.csv",
        ("x" * 251 + ".csv"),  # 255 bytes: the longest name Linux allows
        "a-b.csv",
    ],
)
def test_ordinary_and_long_names_are_fine(name: str) -> None:
    """Accented, non-Latin and 255-byte names are accepted: names are data, stored as bytes."""
    assert check_name(name) is None
    assert check_name(name.encode()) is None
    assert isinstance(decide(RULES, candidate(name=name.encode())), Accepted)


# --- metadata ---------------------------------------------------------------------------------


def test_regular_csv_is_accepted_for_reading() -> None:
    """A regular, singly linked csv under the limit passes the metadata stage."""
    assert Accepted("csv") == decide(RULES, candidate())


def test_symlink_is_refused_before_anything_else() -> None:
    """A symbolic link is refused as such, even with an unsafe name."""
    refused = decide(RULES, candidate(name=b"-x\n.csv", kind=FileKind.SYMLINK))
    refusal(refused, ReasonCode.SYMLINK)


@pytest.mark.parametrize(
    "kind",
    [
        FileKind.DIRECTORY,
        FileKind.FIFO,
        FileKind.SOCKET,
        FileKind.CHAR_DEVICE,
        FileKind.BLOCK_DEVICE,
        FileKind.OTHER,
    ],
)
def test_special_files_are_refused(kind: FileKind) -> None:
    """Directories, fifos, sockets and devices named like datasets are not regular files."""
    detail = refusal(decide(RULES, candidate(kind=kind)), ReasonCode.NOT_REGULAR_FILE)
    assert kind.value in detail


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFREG | 0o644, FileKind.REGULAR),
        (stat.S_IFLNK | 0o777, FileKind.SYMLINK),
        (stat.S_IFDIR | 0o755, FileKind.DIRECTORY),
        (stat.S_IFIFO | 0o600, FileKind.FIFO),
        (stat.S_IFSOCK | 0o600, FileKind.SOCKET),
        (stat.S_IFCHR | 0o600, FileKind.CHAR_DEVICE),
        (stat.S_IFBLK | 0o600, FileKind.BLOCK_DEVICE),
        (0, FileKind.OTHER),
    ],
)
def test_file_kind_from_mode(mode: int, kind: FileKind) -> None:
    """Every st_mode file type maps to its kind."""
    assert kind == FileKind.from_mode(mode)


def test_hard_link_is_refused() -> None:
    """A file with a second link elsewhere is refused."""
    detail = refusal(decide(RULES, candidate(nlink=2)), ReasonCode.HARD_LINK)
    assert "2 hard links" in detail


@pytest.mark.parametrize(
    ("name", "shown"),
    [(b"referrals.exe", "'.exe'"), (b"referrals", "no extension"), (b"referrals.csv.gz", "'.gz'")],
)
def test_format_not_allowed(name: bytes, shown: str) -> None:
    """An extension outside the agreement's formats is refused, listing what is allowed."""
    detail = refusal(decide(RULES, candidate(name=name)), ReasonCode.FORMAT_NOT_ALLOWED)
    assert shown in detail
    assert "csv, json, xlsx" in detail


def test_extension_case_is_ignored() -> None:
    """REFERRALS.CSV is a csv."""
    assert Accepted("csv") == decide(RULES, candidate(name=b"REFERRALS.CSV"))


def test_empty_file_is_refused() -> None:
    """A 0-byte file is refused as empty."""
    refusal(decide(RULES, candidate(size=0)), ReasonCode.EMPTY)


def test_empty_file_is_accepted_and_flagged_when_allowed() -> None:
    """An agreement that allows empty extracts takes a 0-byte file, flagged empty."""
    assert Accepted("csv", empty=True) == decide(OPEN_RULES, candidate(size=0))


@pytest.mark.parametrize("size", [10 * 1024 * 1024 + 1, 100 * 10**9])
def test_too_large_is_refused_before_reading(size: int) -> None:
    """Over the cap (including a sparse file's 100 GB apparent size) is refused, with both sizes."""
    detail = refusal(decide(RULES, candidate(size=size)), ReasonCode.TOO_LARGE)
    assert str(size) in detail and str(RULES.max_size_bytes) in detail


def test_exactly_the_limit_is_fine() -> None:
    """A file of exactly max_size_bytes is accepted."""
    assert isinstance(decide(RULES, candidate(size=RULES.max_size_bytes)), Accepted)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"formats": ()},
        {"formats": ("CSV",)},
        {"formats": (".csv",)},
        {"max_size_bytes": 0},
        {"allowed_fields": ()},
        {"allowed_fields": ("a", "a")},
    ],
)
def test_intake_rules_validate(kwargs: dict[str, object]) -> None:
    """Rules the config loader could mis-build are refused at construction."""
    base: dict[str, object] = {
        "formats": ("csv",),
        "allowed_fields": None,
        "max_size_bytes": 1,
        "allow_empty": False,
    }
    with pytest.raises(ValueError, match="intake rules"):
        IntakeRules(**{**base, **kwargs})  # type: ignore[arg-type]


# --- CSV content ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_good_csv_is_accepted_in_any_chunking(chunk_size: int, eol: bytes) -> None:
    """A well-formed file with LF or CRLF throughout is accepted however it is chunked."""
    data = HEADER + eol + ROW + eol + ROW
    assert Accepted("csv") == check_csv(data, chunk_size)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_utf8_bom_is_accepted(chunk_size: int) -> None:
    """Excel's 'CSV UTF-8' byte order mark is skipped before the header is compared."""
    assert Accepted("csv") == check_csv(b"\xef\xbb\xbf" + HEADER + b"\r\n" + ROW, chunk_size)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_extra_identifying_columns_are_named(chunk_size: int) -> None:
    """Extra NHS_number and DOB columns are refused by name, and no cell value appears."""
    data = HEADER + b",NHS_number,DOB\n" + ROW + b",943 476 5919,2012-04-01\n"
    detail = refusal(check_csv(data, chunk_size), ReasonCode.SCHEMA_MISMATCH)
    assert detail == 'columns not in the agreement: "NHS_number", "DOB"'
    assert "943" not in detail and "2012" not in detail


def test_renamed_column_is_extra_and_missing() -> None:
    """A renamed column shows as one unexpected and one missing column."""
    data = HEADER.replace(b"district", b"District") + b"\n" + ROW + b"\n"
    detail = refusal(check_csv(data, 7), ReasonCode.SCHEMA_MISMATCH)
    assert detail == 'columns not in the agreement: "District"; columns missing: "district"'


def test_duplicate_column_is_refused() -> None:
    """A header naming a column twice is refused, naming it."""
    data = HEADER + b",outcome\n" + ROW + b",x\n"
    detail = refusal(check_csv(data, 64), ReasonCode.SCHEMA_MISMATCH)
    assert detail == 'duplicate columns: "outcome"'


def test_missing_columns_are_refused() -> None:
    """A header lacking agreed columns is refused, naming them."""
    detail = refusal(
        check_csv(b"referral_id,district\nR-1,Harlow\n", 64), ReasonCode.SCHEMA_MISMATCH
    )
    assert detail == 'columns missing: "referral_date", "age_band", "outcome"'


def test_missing_header_row_names_no_values() -> None:
    """A file whose first line is data is refused without repeating that line's values."""
    data = ROW + b"\n" + ROW + b"\n"
    detail = refusal(check_csv(data, 64), ReasonCode.SCHEMA_MISMATCH)
    assert "is the header row missing?" in detail
    assert "Basildon" not in detail and "R-1001" not in detail


def test_quoted_header_fields_are_parsed() -> None:
    """Quoted column names, including an escaped quote and a comma, are compared unquoted."""
    rules = IntakeRules(("csv",), ('a,"b"', "c"), 1000, False)
    assert Accepted("csv") == check_csv(b'"a,""b""",c\r\n1,2\r\n', 3, rules)


@pytest.mark.parametrize(
    "header",
    [b'"referral_id,district\n', b'referral_"id",x\n', b'"a"b,c\n', b'ab"c,d\n'],
)
def test_malformed_header_is_refused(header: bytes) -> None:
    """Unterminated or misplaced quotes in the header are refused, not guessed at."""
    refusal(check_csv(header + ROW + b"\n", 4), ReasonCode.SCHEMA_MISMATCH)


def test_header_longer_than_the_limit_is_refused() -> None:
    """A header with no end within the limit is refused without buffering the whole file."""
    checker = CsvHeaderChecker(None, max_header_bytes=100)
    for _ in range(10):
        result = checker.feed(b"x" * 30)
    detail = refusal(result, ReasonCode.SCHEMA_MISMATCH)
    assert "first 100 bytes" in detail


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("tail", [b"", b"\n", b"\r\n", b"\n\n\n"])
def test_header_only_is_an_empty_extract(chunk_size: int, tail: bytes) -> None:
    """A header with no data rows is refused as empty, or accepted and flagged if allowed."""
    refusal(check_csv(HEADER + tail, chunk_size), ReasonCode.EMPTY)
    assert Accepted("csv", empty=True) == check_csv(HEADER + tail, chunk_size, OPEN_RULES)


def test_empty_first_line_is_refused() -> None:
    """A file starting with a blank line has no header."""
    refusal(check_csv(b"\n" + HEADER + b"\n", 64), ReasonCode.SCHEMA_MISMATCH)


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
def test_utf16_bom_is_refused_as_encoding(bom: bytes) -> None:
    """A UTF-16 file (Excel's 'Unicode text') is refused with an encoding reason."""
    data = bom + (HEADER.decode() + "\n" + ROW.decode() + "\n").encode("utf-16-le")
    detail = refusal(check_csv(data, 64), ReasonCode.ENCODING)
    assert "utf-16" in detail


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_latin1_reports_line_and_offset_only(chunk_size: int) -> None:
    """A Latin-1 byte is reported by line and byte offset, never with the cell around it."""
    row = "R-1002,2026-01-06,Colchester,16-17,Zoë Brown".encode("latin-1")
    data = HEADER + b"\n" + ROW + b"\n" + row + b"\n"
    offset = len(HEADER + b"\n" + ROW + b"\n") + row.index(b"\xeb")
    detail = refusal(check_csv(data, chunk_size), ReasonCode.ENCODING)
    assert f"line 3, byte offset {offset}: not valid utf-8 (save the file as utf-8)" == detail
    assert "Zo" not in detail and "Colchester" not in detail


def test_latin1_in_the_header_is_refused() -> None:
    """A non-UTF-8 byte in the header row is an encoding fault at its offset."""
    detail = refusal(check_csv(b"r\xe9f,district\nx,y\n", 64), ReasonCode.ENCODING)
    assert detail.startswith("line 1, byte offset 1:")


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_nul_bytes_are_refused(chunk_size: int) -> None:
    """A NUL byte anywhere is an encoding fault at its line and offset."""
    data = HEADER + b"\n" + ROW + b"\x00\n"
    detail = refusal(check_csv(data, chunk_size), ReasonCode.ENCODING)
    assert detail.startswith(f"line 2, byte offset {len(HEADER) + 1 + len(ROW)}: NUL byte")


def test_truncated_utf8_at_end_of_file() -> None:
    """A file that ends inside a multi-byte character is an encoding fault."""
    data = HEADER + b"\n" + ROW + "é".encode()[:1]
    detail = refusal(check_csv(data, 3), ReasonCode.ENCODING)
    assert "ends inside a utf-8 sequence" in detail


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("first", "later", "found"),
    [(b"\r\n", b"\n", "LF"), (b"\n", b"\r\n", "CRLF"), (b"\n", b"\r", "a bare CR")],
)
def test_mixed_line_endings_are_refused(
    chunk_size: int, first: bytes, later: bytes, found: str
) -> None:
    """Once the header sets LF or CRLF, any other row ending is refused at its line and offset."""
    data = HEADER + first + ROW + first + ROW + later + ROW + first
    offset = len(HEADER + first + ROW + first + ROW)
    detail = refusal(check_csv(data, chunk_size), ReasonCode.ENCODING)
    assert detail.startswith(f"line 3, byte offset {offset}: a line ends with {found},")


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_bare_cr_files_are_refused(chunk_size: int) -> None:
    """Classic Mac line endings (CR only) are refused."""
    data = HEADER + b"\r" + ROW + b"\r"
    detail = refusal(check_csv(data, chunk_size), ReasonCode.ENCODING)
    assert "a bare CR" in detail


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_line_breaks_inside_quoted_cells_are_data(chunk_size: int) -> None:
    """Excel's LF inside a quoted cell of a CRLF file is not a mixed line ending."""
    data = HEADER + b'\r\nR-1,2026-01-05,Harlow,11-15,"first line\nsecond\rthird"\r\n'
    assert Accepted("csv") == check_csv(data, chunk_size)


def test_refusal_is_sticky() -> None:
    """After a refusal, further chunks change nothing and finish repeats it."""
    checker = CsvChecker(FIELDS, allow_empty=False)
    first = checker.feed(b"\xff\xfe" + HEADER + b"\n")
    assert first is not None
    assert first == checker.feed(ROW + b"\n")
    assert first == checker.finish()


# --- other formats ----------------------------------------------------------------------------


def test_json_must_be_utf8() -> None:
    """A JSON file is checked for encoding only."""
    checker = content_checker(RULES, Accepted("json"))
    assert checker.feed(b'{"district": "Basildon"}') is None
    assert Accepted("json") == checker.finish()
    bad = content_checker(RULES, Accepted("json"))
    bad.feed(b'{"name": "Zo\xeb"}')
    refusal(bad.finish(), ReasonCode.ENCODING)


def test_binary_formats_pass_through() -> None:
    """An xlsx file's bytes are not inspected."""
    checker = content_checker(RULES, Accepted("xlsx"))
    assert checker.feed(b"PK\x03\x04\x00\xff") is None
    assert Accepted("xlsx") == checker.finish()


def test_csv_content_checker_is_the_csv_policy() -> None:
    """content_checker gives csv files the full CSV policy."""
    assert isinstance(content_checker(RULES, Accepted("csv")), CsvChecker)


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"ok\xc3", 2), (b"\xed\xa0\x80", 0), (b"\xc0\xaf", 0), (b"abc\xf4\x90\x80\x80", 3)],
)
def test_utf8_validator_strictness(data: bytes, offset: int) -> None:
    """Truncated sequences, surrogates, overlong forms and code points past U+10FFFF fail."""
    validator = Utf8Validator()
    for byte in data:
        if validator.feed(bytes([byte])) is not None:
            break
    detail = refusal(validator.finish() or Accepted("x"), ReasonCode.ENCODING)
    assert f"byte offset {offset}:" in detail


# --- properties -------------------------------------------------------------------------------

_csvish = st.lists(
    st.sampled_from([b'"', b",", b"\r", b"\n", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\xe9"])
    | st.sampled_from([f.encode() for f in FIELDS])
    | st.binary(max_size=8),
    max_size=30,
).map(b"".join)


@given(data=st.binary(max_size=300) | _csvish, cut=st.integers(min_value=1, max_value=40))
@example(data=b"", cut=1)
def test_header_checker_always_decides(data: bytes, cut: int) -> None:
    """For any bytes, the header checker returns Accepted or Refused and never raises."""
    checker = CsvHeaderChecker(FIELDS, max_header_bytes=128)
    for start in range(0, len(data), cut):
        checker.feed(data[start : start + cut])
    assert isinstance(checker.finish(), Accepted | Refused)


@given(data=st.binary(max_size=300) | _csvish, cut=st.integers(min_value=1, max_value=40))
def test_csv_checker_decision_does_not_depend_on_chunking(data: bytes, cut: int) -> None:
    """The same bytes give the same decision, detail included, whatever the chunk sizes."""
    for rules in (RULES, OPEN_RULES):
        whole = check_csv(data, max(len(data), 1), rules)
        assert isinstance(whole, Accepted | Refused)
        assert whole == check_csv(data, cut, rules)


@given(
    name=st.binary(min_size=1, max_size=300) | st.text(min_size=1, max_size=100),
    size=st.integers(min_value=0, max_value=10**15),
    kind=st.sampled_from(FileKind),
    nlink=st.integers(min_value=0, max_value=3),
)
def test_decide_always_decides_and_never_echoes_the_name(
    name: bytes | str, size: int, kind: FileKind, nlink: int
) -> None:
    """For any entry, decide returns a verdict, and a refusal's detail never holds the name."""
    if not is_candidate_name(name):
        return
    verdict = decide(RULES, Candidate(name=name, size=size, kind=kind, nlink=nlink))
    assert isinstance(verdict, Accepted | Refused)
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")
    stem = raw.rpartition(b".")[0] or raw
    if isinstance(verdict, Refused) and len(stem) >= 12:
        assert stem.decode("utf-8", "replace") not in verdict.detail
