"""The access log never shows a ticket's pass."""

from __future__ import annotations

import logging
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from usher.accesslog import RedactPasses, redact_path


def test_the_pass_of_a_check_url_is_hidden_and_the_rest_kept() -> None:
    assert (
        redact_path("/usher/check?key=k.1&pass=s3cret&app=demo-live")
        == "/usher/check?key=k.1&pass=***&app=demo-live"
    )
    assert redact_path("/x?user=u&password=hunter2") == "/x?user=u&password=***"
    assert redact_path("/usher/check") == "/usher/check"
    assert redact_path("/x?passage=1&bypass=2") == "/x?passage=1&bypass=2"


def test_an_encoded_name_or_a_repeated_pass_is_hidden_too() -> None:
    assert redact_path("/c?p%61ss=s3cret&PASS=x&pass=y") == "/c?p%61ss=***&PASS=***&pass=***"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%=+", max_size=30))
def test_no_pass_value_survives(value: str) -> None:
    logged = redact_path(f"/usher/check?key=k&pass={value}&app=a")
    assert logged == "/usher/check?key=k&pass=***&app=a"


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/usher/check?key=k&pass=s3cret", "1.1", 200), None,
    )  # fmt: skip
    assert RedactPasses().filter(record)
    assert "s3cret" not in record.getMessage()
    assert record.getMessage() == '127.0.0.1:5000 - "GET /usher/check?key=k&pass=*** HTTP/1.1" 200'


def test_a_pass_inside_another_parameters_url_is_hidden() -> None:
    """nginx-rtmp's ``notify_method get`` puts the connection URL in the
    query; an encoder may carry ``user`` and ``pass`` on it."""
    tcurl = quote("rtmp://h:1935/demo-live?user=alice&pass=SECRET", safe="")
    logged = redact_path(f"/usher/nginx-rtmp?app=demo-live&tcurl={tcurl}&call=publish&name=cam")
    assert "SECRET" not in logged
    assert logged == "/usher/nginx-rtmp?app=demo-live&tcurl=***&call=publish&name=cam"
    plain = f"/usher/nginx-rtmp?tcurl={quote('rtmp://h/demo-live', safe='')}&name=cam"
    assert redact_path(plain) == plain
