"""The OvenMediaEngine adapter: OME's admission bodies in, notes and answers
out, for the recorded fixtures and for any input at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.adapters import ome
from usher.adapters.sessions import ome_session_handle
from usher.tickets.model import CheckRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ome"
KEY = "demo.0a1b2c3d4e5f60.12345678"


def notice(name: str, part: str, key: str = KEY, password: str = "pw") -> bytes:
    document = json.loads((FIXTURES / name).read_text())
    text = json.dumps(document[part], separators=(",", ":"))
    return text.replace("{key}", key).replace("{pass}", password).encode()


def expected_request(ip: str, url: str, *, key: str = KEY, password: str = "pw") -> CheckRequest:
    return CheckRequest(
        key=key,
        password=password,
        app="demo-live",
        video="livestream",
        ip=ip,
        refurl=url.partition("?")[0],
        server_ip="127.0.0.1",
    )


# -- the fixtures, every field ----------------------------------------------------


WS = f"ws://203.0.113.5:3333/demo-live/livestream?key={KEY}&pass=pw"
LLHLS = f"http://203.0.113.5:3333/demo-live/livestream/llhls.m3u8?key={KEY}&pass=pw"
SRT = f"srt://default/demo-live/livestream?key={KEY}&pass=pw"
SRT_PARAMETER = (
    "srt://203.0.113.5:9998?streamid=srt%3A%2F%2F203.0.113.5%3A9998%2Fdemo-live%2F"
    f"livestream%3Fkey%3D{KEY}%26pass%3Dpw"
)


@pytest.mark.parametrize(
    ("name", "part", "kind", "protocol", "address", "port", "ip", "url"),
    [
        ("webrtc.json", "opening", ome.Kind.PLAY_OPENING, "webrtc", "192.0.2.43", "51234",
         "192.0.2.43", WS),
        ("webrtc.json", "closing", ome.Kind.PLAY_CLOSING, "webrtc", "192.0.2.43", "51234",
         "192.0.2.43", WS),
        # Behind a proxy: the viewer is real_ip, the session the proxy's socket.
        ("llhls.json", "opening", ome.Kind.PLAY_OPENING, "llhls", "10.0.0.9", "44810",
         "198.51.100.20", LLHLS),
        ("srt.json", "opening", ome.Kind.PLAY_OPENING, "srt", "198.51.100.77", "40213",
         "198.51.100.77", SRT),
        ("srt.json", "closing", ome.Kind.PLAY_CLOSING, "srt", "198.51.100.77", "40213",
         "198.51.100.77", SRT),
        ("srt.json", "opening_streamid_parameter", ome.Kind.PLAY_OPENING, "srt",
         "198.51.100.77", "40213", "198.51.100.77", SRT_PARAMETER),
    ],
)  # fmt: skip
def test_playback_fixtures_are_read_field_by_field(
    name: str,
    part: str,
    kind: ome.Kind,
    protocol: str,
    address: str,
    port: str,
    ip: str,
    url: str,
) -> None:
    note = ome.parse(notice(name, part), server_ip="127.0.0.1")
    assert note == ome.Admission(
        kind,
        expected_request(ip, url),
        ome_session_handle(address, port, url),
        protocol=protocol,
        closing=kind is ome.Kind.PLAY_CLOSING,
    )


@pytest.mark.parametrize(
    ("name", "part", "closing", "address", "port", "url"),
    [
        ("rtmp.json", "opening", False, "198.51.100.9", "49152",
         "rtmp://203.0.113.5:1935/demo-live/livestream?user=alice&pass=secret"),
        ("rtmp.json", "closing", True, "198.51.100.9", "49152",
         "rtmp://203.0.113.5:1935/demo-live/livestream?user=alice&pass=secret"),
        ("webrtc.json", "publish_opening", False, "198.51.100.9", "61022",
         "ws://203.0.113.5:3333/demo-live/livestream?direction=send&user=alice&pass=secret"),
    ],
)  # fmt: skip
def test_incoming_fixtures_are_publishes(
    name: str, part: str, closing: bool, address: str, port: str, url: str
) -> None:
    note = ome.parse(notice(name, part), server_ip="127.0.0.1")
    assert note.kind is ome.Kind.PUBLISH
    assert note.closing is closing
    assert note.handle == ome_session_handle(address, port, url)
    # No real_ip in the RTMP fixture: the viewer address is the socket's.
    assert note.request == expected_request(address, url, key="", password="secret")


@pytest.mark.parametrize("name", ["webrtc.json", "srt.json"])
def test_the_closing_names_the_session_of_its_opening(name: str) -> None:
    opening = ome.parse(notice(name, "opening"), server_ip="")
    closing = ome.parse(notice(name, "closing"), server_ip="")
    assert opening.handle == closing.handle
    assert opening.handle.startswith("ome:")


def test_another_socket_or_url_is_another_session() -> None:
    base = json.loads(notice("webrtc.json", "opening"))
    handles = {ome.parse(json.dumps(base).encode(), server_ip="").handle}
    for client, url in [
        ({**base["client"], "port": 51235}, base["request"]["url"]),
        ({**base["client"], "address": "192.0.2.44"}, base["request"]["url"]),
        (base["client"], base["request"]["url"].replace("livestream", "other")),
    ]:
        body = {"client": client, "request": {**base["request"], "url": url}}
        handles.add(ome.parse(json.dumps(body).encode(), server_ip="").handle)
    assert len(handles) == 4


def test_every_fixture_file_is_read() -> None:
    names = {path.name for path in FIXTURES.glob("*.json")}
    assert names == {"webrtc.json", "llhls.json", "srt.json", "rtmp.json", "signed.json"}


# -- URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "app", "video", "query"),
    [
        ("ws://h:3333/app/stream?key=k&pass=p", "app", "stream", "key=k&pass=p"),
        ("wss://h/app/stream", "app", "stream", ""),
        ("http://h:3333/app/stream/llhls.m3u8?key=k", "app", "stream", "key=k"),
        ("http://h/app/stream/thumb.jpg", "app", "stream", ""),
        ("rtmp://h:1935/app/stream?key=k", "app", "stream", "key=k"),
        ("srt://default/app/stream?key=k", "app", "stream", "key=k"),
        ("srt://h:9999?streamid=srt%3A%2F%2Fh%3A9999%2Fapp%2Fstream%3Fkey%3Dk", "app", "stream",
         "key=k"),
        ("srt://h:9999?streamid=default%2Fapp%2Fstream%3Fkey%3Dk", "app", "stream", "key=k"),
        ("srt://h:9999/?streamid=%23%21%3A%3Au%3Ddefault%2Fapp%2Fstream%2Cr%3Dx", "app",
         "stream", ""),
        ("srt://h:9999?streamid=%23%21%3A%3Ar%3Dx", "", "", ""),
        ("ws://h/app%20one/str%C3%A9am", "app one", "stréam", ""),
        ("ws://h/app", "app", "", ""),
        ("ws://h/", "", "", ""),
        ("ws://h/app/../other/stream", "", "", ""),
        ("ws://h/app/%2e%2e/stream", "", "", ""),
        ("HTTP://[::1/app/stream", "app", "stream", ""),
        ("/app/stream?key=k", "app", "stream", "key=k"),
        # Only an SRT URL without a path is read through its streamid.
        ("ws://h?streamid=default%2Fapp%2Fstream", "", "", "streamid=default%2Fapp%2Fstream"),
    ],
)  # fmt: skip
def test_urls_name_app_video_and_query(url: str, app: str, video: str, query: str) -> None:
    assert ome.target(url) == ome.Target(app, video, query)


def test_a_conflicting_credential_counts_as_none() -> None:
    body = json.loads(notice("webrtc.json", "opening"))
    body["request"]["url"] = f"ws://h/demo-live/livestream?key={KEY}&key=other&pass=pw"
    note = ome.parse(json.dumps(body).encode(), server_ip="")
    assert (note.request.key, note.request.password) == ("", "pw")


def test_an_empty_real_ip_falls_back_to_the_address() -> None:
    body = json.loads(notice("webrtc.json", "opening"))
    body["client"]["real_ip"] = ""
    assert ome.parse(json.dumps(body).encode(), server_ip="").request.ip == "192.0.2.43"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "not a JSON object"),
        (b"[1]", "not a JSON object"),
        (b"\xff\xfe", "not a JSON object"),
        (b'{"client": {}}', "no 'request' object"),
        (b'{"request": "x"}', "no 'request' object"),
        (b'{"request": {"status": "opening", "url": "ws://h/a/b"}}', "no 'direction'"),
        (b'{"request": {"direction": "sideways", "status": "opening", "url": "ws://h/a/b"}}',
         "direction='sideways'"),
        (b'{"request": {"direction": "outgoing", "status": 1, "url": "ws://h/a/b"}}',
         "status='1'"),
        (b'{"request": {"direction": "outgoing", "status": "opening"}}', "no 'url'"),
        (b'{"request": {"direction": "outgoing", "status": "opening", "url": ["x"]}}', "no 'url'"),
    ],
)  # fmt: skip
def test_unusable_bodies_say_what_is_wrong(body: bytes, words: str) -> None:
    note = ome.parse(body, server_ip="")
    assert note.kind is ome.Kind.INVALID
    assert words in note.problem
    assert note.problem.endswith("point only OvenMediaEngine's AdmissionWebhooks at /usher/ome.")


# -- signatures ----------------------------------------------------------------------


SIGNED = json.loads((FIXTURES / "signed.json").read_text())


@pytest.mark.parametrize("example", SIGNED["examples"], ids=lambda example: example["name"])
def test_recorded_signatures_verify(example: dict[str, Any]) -> None:
    body = example["body"].encode()
    secret = SIGNED["secret"]
    assert ome.signature(body, secret) == example["signature"]
    assert ome.verify_signature(body, example["signature"], secret)
    # Padding is tolerated; a SHA-1 digest in base64 carries one "=".
    assert ome.verify_signature(body, example["signature"] + "=", secret)
    assert not ome.verify_signature(body, example["signature"], secret + "5")
    assert not ome.verify_signature(body + b" ", example["signature"], secret)
    assert not ome.verify_signature(body, None, secret)
    assert not ome.verify_signature(body, "", secret)
    # Standard base64 is not what OME sends.
    standard = example["signature"].replace("-", "+").replace("_", "/")
    if standard != example["signature"]:
        assert not ome.verify_signature(body, standard, secret)


def test_signed_examples_parse_as_what_they_say() -> None:
    kinds = [ome.parse(ex["body"].encode(), server_ip="").kind for ex in SIGNED["examples"]]
    assert kinds == [ome.Kind.PLAY_OPENING, ome.Kind.PLAY_CLOSING, ome.Kind.PLAY_OPENING]


@given(body=st.binary(max_size=500), secret=st.text(max_size=40))
def test_a_signature_verifies_its_body(body: bytes, secret: str) -> None:
    signed = ome.signature(body, secret)
    assert "=" not in signed and "+" not in signed and "/" not in signed
    assert ome.verify_signature(body, signed, secret)


@given(
    body=st.binary(min_size=1, max_size=500),
    secret=st.text(max_size=40),
    where=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_a_tampered_body_does_not_verify(body: bytes, secret: str, where: int, flip: int) -> None:
    signed = ome.signature(body, secret)
    position = where % len(body)
    tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    assert not ome.verify_signature(tampered, signed, secret)
    assert not ome.verify_signature(body + b"\n", signed, secret)


@given(header=st.text(max_size=60))
def test_any_header_is_compared_without_raising(header: str) -> None:
    expected = ome.signature(b"{}", "secret")
    assert ome.verify_signature(b"{}", header, "secret") is (header.rstrip("=") == expected)


# -- answers -------------------------------------------------------------------------


def test_answer_bodies_are_what_ome_reads() -> None:
    assert json.loads(ome.allowed_body(3_600_000)) == {
        "allowed": True,
        "lifetime": 3_600_000,
        "reason": "",
    }
    assert json.loads(ome.refused_body("Ticket revoked")) == {
        "allowed": False,
        "reason": "Ticket revoked",
    }
    assert ome.CLOSED == b"{}"


@pytest.mark.parametrize(
    ("expire_at", "now", "milliseconds"),
    [
        (1_700_003_600, 1_700_000_000, 3_600_000),
        (1_700_000_001, 1_700_000_000.25, 750),
        # At or past expiry: 1 ms, never 0, which OME reads as "no limit".
        (1_700_000_000, 1_700_000_000, 1),
        (1_700_000_000, 1_700_000_009, 1),
        # Beyond what JsonCpp reads as an unsigned 64-bit integer: capped.
        (2**62, 0, ome.MAX_LIFETIME),
    ],
)
def test_lifetime_is_milliseconds_until_expiry(
    expire_at: int, now: float, milliseconds: int
) -> None:
    assert ome.lifetime(expire_at, now) == milliseconds


# -- any input -----------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_any_bytes_are_read_without_raising(data: bytes) -> None:
    note = ome.parse(data, server_ip="")
    note.request.key.encode("utf-8")  # storable, whatever came in


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
URLS = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda scheme, path, query: f"{scheme}://h{path}?{query}",
        st.sampled_from(["ws", "http", "srt", "rtmp", "SRT"]),
        st.text(max_size=40),
        st.text(max_size=40),
    ),
)


@given(
    client=st.dictionaries(
        st.sampled_from(["address", "port", "real_ip", "user_agent", "x"]), JSON_VALUES
    ),
    request=st.fixed_dictionaries(
        {},
        optional={
            "direction": st.sampled_from(["outgoing", "incoming"]) | JSON_VALUES,
            "status": st.sampled_from(["opening", "closing"]) | JSON_VALUES,
            "protocol": JSON_VALUES,
            "url": URLS | JSON_VALUES,
            "new_url": JSON_VALUES,
            "time": JSON_VALUES,
        },
    ),
    extra=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
)
def test_any_json_is_read_without_raising(
    client: dict[str, Any], request: dict[str, Any], extra: dict[str, Any]
) -> None:
    body = json.dumps({**extra, "client": client, "request": request}).encode()
    note = ome.parse(body, server_ip="")
    if note.kind is ome.Kind.INVALID:
        assert note.problem.endswith(".")
    else:
        assert note.handle.startswith("ome:")
        for text in (note.request.key, note.request.app, note.request.video, note.request.ip):
            text.encode("utf-8")
