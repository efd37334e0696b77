"""The default URI layouts of ``/usher/auth-request`` (SPEC §4): a directory
per video, and nginx-rtmp's flat HLS and DASH layouts where the video is read
from the file name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.adapters.auth_request import Location, locate

#: Stream names as an encoder may publish them: dashes and digits included,
#: so a name such as ``cam-1`` must keep its own ``-1``.
STREAMS = st.text(st.sampled_from("abcXYZ019-_é"), min_size=1, max_size=16).filter(
    lambda name: name.strip("-") == name and name not in (".", "..")
)
FRAGMENT_NUMBERS = st.integers(min_value=0, max_value=10**12)


@given(STREAMS, FRAGMENT_NUMBERS)
def test_flat_hls_files_belong_to_their_stream(stream: str, n: int) -> None:
    for name in (f"{stream}.m3u8", f"{stream}-{n}.ts"):
        assert locate(f"/demo-live/{name}", None) == Location("demo-live", stream), name


@given(STREAMS, FRAGMENT_NUMBERS)
def test_flat_dash_files_belong_to_their_stream(stream: str, n: int) -> None:
    names = [f"{stream}.mpd", f"{stream}-{n}.m4s", f"{stream}-init.m4s"]
    # What nginx-rtmp's DASH really writes: video and audio fragments apart.
    names += [f"{stream}-{n}.m4v", f"{stream}-{n}.m4a", f"{stream}-init.m4v", f"{stream}-init.m4a"]
    for name in names:
        assert locate(f"/demo-live/{name}", None) == Location("demo-live", stream), name


@given(STREAMS, FRAGMENT_NUMBERS)
def test_nested_files_belong_to_their_directory(stream: str, n: int) -> None:
    names = ["index.m3u8", f"{n}.ts", "index.mpd", f"{n}.m4v", "init.m4a", f"{n}.m4s"]
    for name in names:
        assert locate(f"/demo-live/{stream}/{name}", None) == Location("demo-live", stream), name


@pytest.mark.parametrize(
    ("path", "video"),
    [
        ("/demo-live/cam-1.m3u8", "cam-1"),  # a playlist keeps every dash of its name
        ("/demo-live/cam-1-7.ts", "cam-1"),  # a fragment drops only its own number
        ("/demo-live/cam-1-init.m4s", "cam-1"),
        ("/demo-live/Cam-INIT.M4V", "Cam"),
        ("/demo-live/-7.ts", ""),  # no stream name at all: refused as Invalid Video
        ("/demo-vod/index.m3u8", "index"),
        ("/demo-vod/song.m4a", "song.m4a"),  # progressive files are videos themselves
        ("/demo-vod/songs/intro.m4a", "songs/intro.m4a"),
        ("/demo-vod/episode-2.mp4", "episode-2.mp4"),
        ("/demo-vod/movie/720p/seg-12.ts", "movie/720p"),
    ],
)
def test_flat_layout_edges(path: str, video: str) -> None:
    assert locate(path, None).video == video
