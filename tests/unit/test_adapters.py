"""The sans-io adapters: wire formats in, checks out, for any input at all."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from usher.adapters import auth_request, mediamtx, nginx_rtmp, srs
from usher.adapters.check import MAX_FIELDS, credential, parse_json_object, parse_pairs
from usher.adapters.sessions import http_session_handle, rtmp_session_handle
from usher.config import parse_uri_pattern
from usher.tickets.model import CheckRequest
from usher.tickets.text import storable

REQUEST = CheckRequest(key="k", password="p", app="demo-live", video="v", ip="192.0.2.1")


@given(st.binary(max_size=2000))
def test_every_adapter_reads_any_bytes_without_raising(data: bytes) -> None:
    pattern = parse_uri_pattern(r"/(?P<app>[^/]+)/(?P<video>.+)")
    for method in ("GET", "POST"):
        pairs = nginx_rtmp.parse_body(data, data, method)
        nginx_rtmp.parse(pairs, caller="127.0.0.1", server_ip="127.0.0.1")
    for layout in (None, pattern):
        checked, session_id = auth_request.parse(
            data, ip="192.0.2.1", referer="", server_ip="", pattern=layout
        )
        checked.key.encode("utf-8")  # whatever came in, the text is storable
        assert session_id.startswith("http:")
    srs.parse(data, server_ip="")
    mediamtx.parse(data, server_ip="")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=12))
def test_json_callbacks_accept_any_object(fields: dict[str, object]) -> None:
    for action in ("on_play", "read"):
        body = json.dumps({**fields, "action": action}).encode()
        hook = srs.parse(body, server_ip="")
        auth = mediamtx.parse(body, server_ip="")
        for request in (hook.request, auth.request):
            request.key.encode("utf-8")
            request.video.encode("utf-8")


def test_lone_surrogates_and_nul_become_the_replacement_character() -> None:
    assert storable("a\ud800b\x00c") == "a\ufffdb\ufffdc"
    assert storable("é\udfff") == "é\ufffd"
    assert storable("plain") == "plain"
    fields = parse_json_object(b'{"param": "?key=\\udc80&pass=x"}')
    assert fields is not None
    hook = srs.parse(b'{"action":"on_play","param":"?key=\\udc80&pass=x"}', server_ip="")
    assert hook.request.key == "\ufffd"


def test_a_conflicting_credential_counts_as_none() -> None:
    assert credential(parse_pairs("key=a&key=a"), "key") == "a"
    assert credential(parse_pairs("key=a&key=b"), "key") == ""
    assert credential(parse_pairs("pass=x"), "key") is None
    # Duplicated JSON members that disagree are dropped the same way.
    assert parse_json_object(b'{"param": "a", "param": "b"}') == {"param": None}
    assert parse_json_object(b'{"param": "a", "param": "a"}') == {"param": "a"}


def test_rtmp_first_occurrence_wins_for_nginx_fields() -> None:
    pairs = parse_pairs(
        "app=demo-live&tcurl=rtmp%3A%2F%2Fh%2Fdemo-live%2Finst&addr=192.0.2.1&clientid=3"
        "&call=play&name=s&key=k&pass=p&addr=6.6.6.6&call=play_done&name=t"
    )
    note = nginx_rtmp.parse(pairs, caller="10.0.0.1", server_ip="10.0.0.1")
    assert note.call is nginx_rtmp.Call.PLAY
    assert (note.request.ip, note.request.video, note.request.appinst) == ("192.0.2.1", "s", "inst")
    assert note.request.count_use
    update = nginx_rtmp.parse(
        [*pairs[:4], ("call", "update_play"), *pairs[5:]], caller="10.0.0.1", server_ip=""
    )
    assert update.call is nginx_rtmp.Call.UPDATE and not update.request.count_use
    # Play, update and done of one connection share one session id.
    assert update.handle == note.handle


def test_session_ids_separate_what_spec_separates() -> None:
    other_ip = CheckRequest(key="k", password="p", app="demo-live", video="v", ip="192.0.2.2")
    other_pass = CheckRequest(key="k", password="x", app="demo-live", video="v", ip="192.0.2.1")
    assert http_session_handle(REQUEST) != http_session_handle(other_ip)
    # The password is not part of an HTTP session: every request re-checks it.
    assert http_session_handle(REQUEST) == http_session_handle(other_pass)
    assert rtmp_session_handle("a", "1", REQUEST) != rtmp_session_handle("a", "2", REQUEST)
    assert rtmp_session_handle("a", "1", REQUEST) != rtmp_session_handle("b", "1", REQUEST)


def test_srs_reads_the_viewer_query_wherever_old_versions_put_it() -> None:
    base = {"action": "on_play", "app": "demo-live", "stream": "s", "ip": "192.0.2.1"}
    for extra in (
        {"param": "?key=k&pass=p"},
        {"stream": "s?key=k&pass=p"},
        {"app": "demo-live?key=k&pass=p"},
        {"tcUrl": "rtmp://h/demo-live?key=k&pass=p"},
    ):
        request = srs.parse(json.dumps({**base, **extra}).encode(), server_ip="").request
        assert (request.key, request.password, request.app, request.video) == (
            "k",
            "p",
            "demo-live",
            "s",
        ), extra


def test_mediamtx_path_and_credentials() -> None:
    body = {"action": "read", "path": "/demo-live/a/b", "user": "k", "password": "p", "query": ""}
    auth = mediamtx.parse(json.dumps(body).encode(), server_ip="")
    assert (auth.request.app, auth.request.video, auth.request.key) == ("demo-live", "a/b", "k")
    assert auth.reader_id == ""
    assert mediamtx.parse(b'{"action": "api"}', server_ip="").action is mediamtx.Action.REFUSED


@given(st.lists(st.sampled_from(["key", "pass", "=", "&", "a", "b", "é", " ", ";", "\x00"])))
def test_the_plain_query_fast_path_parses_like_parse_qsl(parts: list[str]) -> None:
    # Without % or + there is nothing to decode, and parse_pairs skips
    # parse_qsl; the pairs must be exactly the ones parse_qsl would give.
    data = "".join(parts)
    expected = parse_qsl(data, keep_blank_values=True, max_num_fields=None)[:MAX_FIELDS]
    assert parse_pairs(data) == expected
    assert parse_pairs(data.encode()) == expected


def test_the_fast_path_keeps_the_field_limit() -> None:
    assert len(parse_pairs("&".join(f"f{i}=v" for i in range(500)))) == MAX_FIELDS
