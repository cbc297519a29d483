import re

import numpy as np
import pytest

from latentwalk.errors import UserError
from latentwalk.beats import beat_to_time, snap_times
from latentwalk.lyrics import fill_template, parse_lrc
from latentwalk.prompts import parse_prompt
from latentwalk.schedule import plan_frames
from latentwalk.timeline import parse_timeline

LRC = """[ti:Song]
[ar:Someone]

[00:01.50]first line
[00:03.25][01:00.00]chorus <00:03.50>with words
[00:02]second, no fraction
[00:05.125]
"""


def test_parse_lrc_lines_tags_and_metadata():
    lines = parse_lrc(LRC, "s.lrc")
    assert [(e.time, e.text, e.line) for e in lines] == [
        (1.5, "first line", 4),
        (2.0, "second, no fraction", 6),
        (3.25, "chorus with words", 5),  # the word tag is dropped
        (5.125, "", 7),  # a gap marker
        (60.0, "chorus with words", 5),  # the second time tag of line 5
    ]


def test_offset_tag_shifts_every_line_sooner():
    lines = parse_lrc("[00:02.00]a\n[offset:+500]\n[00:04.00]b\n")
    assert [e.time for e in lines] == [1.5, 3.5]
    assert [e.time for e in parse_lrc("[offset:-250]\n[00:02.00]a\n")] == [2.25]


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("[00:01.00]ok\nno tag here\n", 2, "expected a time tag like [01:23.45]"),
        ("[00:01.00]ok\n\n[00:75.00]bad seconds\n", 3, "seconds must be below 60"),
        ("[offset:soon]\n", 1, "[offset:] takes whole milliseconds"),
        ("[00:01.00][0x:12]text\n", 1, "malformed time tag"),
    ],
)
def test_bad_lrc_lines_are_numbered(text, line, reason):
    with pytest.raises(UserError) as info:
        parse_lrc(text, "song.lrc")
    assert str(info.value).startswith(f"song.lrc:{line}: lyrics: ") and reason in str(info.value)


BEATS = np.arange(0, 16) * 0.5 + 0.1  # 120 bpm, first beat at 0.1 s


def test_snap_to_nearest_beat_and_bar():
    times = np.array([0.0, 0.3, 0.4, 1.2, 2.05, 9.0])
    np.testing.assert_allclose(snap_times(times, "none", BEATS, 120.0, 4, 0), times)
    np.testing.assert_allclose(snap_times(times, "beat", BEATS, 120.0, 4, 0), [0.1, 0.1, 0.6, 1.1, 2.1, 9.1])
    # bars start at beats 0, 4, 8, ... = 0.1, 2.1, 4.1 s; past the grid at the tempo: beat 16 = 8.1 s
    np.testing.assert_allclose(snap_times(times, "bar", BEATS, 120.0, 4, 0), [0.1, 0.1, 0.1, 2.1, 2.1, 8.1])
    # with downbeat 2, bars start at beats 2, 6, 10 = 1.1, 3.1, 5.1 s (and -2 → clamped to 0)
    np.testing.assert_allclose(snap_times(np.array([0.0, 2.0, 2.2]), "bar", BEATS, 120.0, 4, 2), [0.0, 1.1, 3.1])


def test_beat_to_time_inverts_the_grid():
    np.testing.assert_allclose(beat_to_time(np.array([0, 1.5, 15, 17, -1]), BEATS, 120.0), [0.1, 0.85, 7.6, 8.6, -0.4])


def test_template_escapes_lyrics_and_keeps_them_plain_prompts():
    prompt = fill_template("{line}, watercolor, {style}", {"line": '(I can\'t) get "no" {x}', "style": "ink"})
    parsed = parse_prompt(prompt)
    assert len(parsed.terms) == 1 and parsed.terms[0][1] == 1.0
    assert parsed.terms[0][0].text.replace("\\", "") == '(I can\'t) get "no" {x}, watercolor, ink'
    # token edits in the template survive
    assert fill_template("a {cat|dog:0.5} singing {line}", {"line": "hey"}) == "a {cat|dog:0.5} singing hey"


def lyrics_timeline(tmp_path, extra: str, lrc: str = "[00:01.00]one\n[00:02.20]two\n[00:03.90]three\n"):
    (tmp_path / "song.lrc").write_text(lrc)
    text = (
        "fps: 10\nend: {time: 6}\naudio: {bpm: 120}\nlyrics: song.lrc\n" + extra
        + "keyframes:\n  - {time: 0, prompt: intro, seed: 4}\n  - {time: 3, prompt: bridge, seed: 9}\n"
    )
    return parse_timeline(text, str(tmp_path / "t.yaml"), tmp_path)


def test_lyrics_become_keyframes_mixed_with_ordinary_ones(tmp_path):
    tl = lyrics_timeline(tmp_path, 'lyrics_template: "{line}, {style}"\nlyrics_vars: {style: ink}\nlyrics_overrides:\n  two: {prompt: a dog, guidance: 3}\n')
    plan = plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)
    got = [(k.frame, k.keyframe.prompt, k.keyframe.seed, k.keyframe.origin) for k in plan.keyframes]
    assert got == [
        (0, "intro", 4, ""),
        (10, "one, ink", 4, "song.lrc:1"),  # no seed: keeps the previous keyframe's
        (22, "a dog", 4, "song.lrc:2"),
        (30, "bridge", 9, ""),
        (39, "three, ink", 9, "song.lrc:3"),
    ]
    assert plan.frames[22].guidance == 3.0 and plan.frames[10].guidance == 7.5


def test_lyrics_snap_to_beats_and_collisions_are_errors(tmp_path):
    tl = lyrics_timeline(tmp_path, "lyrics_snap: beat\n")
    plan = plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)
    assert [k.frame for k in plan.keyframes] == [0, 10, 20, 30, 40]
    # bars every 2 s: 1.0 s is halfway between bars 0 and 1 and rounds up; 4.3 s snaps to bar 2
    tl = lyrics_timeline(tmp_path, "lyrics_snap: bar\n", lrc="[00:01.00]one\n[00:04.30]two\n")
    plan = plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)
    assert [(k.frame, k.keyframe.prompt) for k in plan.keyframes] == [(0, "intro"), (20, "one"), (30, "bridge"), (40, "two")]
    tl = lyrics_timeline(tmp_path, "lyrics_snap: bar\n", lrc="[00:00.20]too early\n")
    with pytest.raises(UserError, match=r"song.lrc:1: lyrics: lands on frame 0, the same frame as .*'intro'"):
        plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("lyrics_snap: word\n", "lyrics_snap: unknown value 'word'"),
        ('lyrics_template: "{line} in {mood}"\n', "unknown placeholder {mood}"),
        ("lyrics_overrides: {7: a cat}\n", "lyrics_overrides[7]: no lyric line 7"),
        ("lyrics_overrides: {one: {prompt: a cat, sed: 3}}\n", "unknown key 'sed' (did you mean 'seed'?)"),
    ],
)
def test_bad_lyrics_settings(tmp_path, extra, message):
    with pytest.raises(UserError, match=re.escape(message)):
        lyrics_timeline(tmp_path, extra)


def test_bad_lrc_in_a_timeline_names_the_lrc_line(tmp_path):
    with pytest.raises(UserError, match=r"song.lrc:2: lyrics: expected a time tag"):
        lyrics_timeline(tmp_path, "", lrc="[00:01.00]one\noops\n")


# --- messages name the YAML field that is wrong, not the LRC line it met ---------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        ("lyrics_overrides:\n  2: {prompt: a dog, guidance: '2 +'}\n", r"^\S*t.yaml:6: lyrics_overrides\[2\].guidance: unexpected end of expression"),
        ("lyrics_overrides:\n  2: {prompt: a dog, guidance: 200}\n", r"^\S*t.yaml:6: lyrics_overrides\[2\].guidance: must be at most 100, got 200"),
        ("lyrics_overrides:\n  two: '\"a\" +'\n", r"^\S*t.yaml:6: lyrics_overrides.two.prompt: unexpected end of expression"),
        ("lyrics_template: '(\"{line}\" +'\n", r"^\S*t.yaml:5: lyrics_template \(filled with song.lrc:1\): unexpected end of expression"),
    ],
)
def test_a_bad_override_or_template_is_blamed_on_its_yaml_line(tmp_path, extra, message):
    with pytest.raises(UserError, match=message) as info:
        lyrics_timeline(tmp_path, extra)
    assert "song.lrc:2: lyrics:" not in str(info.value)


def test_an_override_expression_out_of_range_names_its_yaml_line(tmp_path):
    tl = lyrics_timeline(tmp_path, "lyrics_overrides:\n  two: {prompt: a dog, guidance: 60 * t}\n")
    with pytest.raises(UserError, match=r"t.yaml:6: lyrics_overrides.two.guidance: must be at most 100, but its expression gives 120 at frame 20 \(2.000s, segment 1, which travels toward this value\)"):
        plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)


def lyrics_only(tmp_path, audio: str, lrc: str = "[00:10.00]one\n[00:20.00]two\n"):
    (tmp_path / "song.lrc").write_text(lrc)
    return parse_timeline(f"fps: 4\n{audio}lyrics: song.lrc\n", str(tmp_path / "t.yaml"), tmp_path)


def test_lyrics_that_all_fall_outside_the_clip_say_so_at_the_lyrics_line(tmp_path):
    from latentwalk.toy.soundtrack import drum_track, write_wav

    write_wav(drum_track(120.0, 2), tmp_path / "a.wav")
    with pytest.raises(UserError, match=r"t.yaml:3: lyrics: none of the 2 sung lines of song.lrc \(10.000s to 20.000s into the audio\) falls inside the audio clip \(0s to 3s"):
        lyrics_only(tmp_path, "audio: {path: a.wav, end: 3}\n")
    with pytest.raises(UserError, match=r"t.yaml:3: lyrics: '\S*song.lrc' has no sung line, only metadata and gaps"):
        lyrics_only(tmp_path, "audio: {path: a.wav}\n", lrc="[ar:someone]\n[00:01.00]\n")
    tl = lyrics_only(tmp_path, "audio: {bpm: 120}\nend: {time: 5}\n")  # inside the clip, after the video
    with pytest.raises(UserError, match=r"t.yaml:4: lyrics: every sung line falls after the end of the video \(5.000s; the first, song.lrc:1, at 10.000s\)"):
        plan_frames(tl, np.arange(0, 20) * 0.5, 120.0, None)


def test_lyrics_snap_messages_name_their_line(tmp_path):
    (tmp_path / "song.lrc").write_text("[00:01.00]one\n")
    tl = parse_timeline("fps: 4\nend: {time: 4}\nlyrics: song.lrc\nlyrics_snap: beat\n", str(tmp_path / "t.yaml"), tmp_path)
    with pytest.raises(UserError, match=r"t.yaml:4: lyrics_snap: beat needs a beat grid"):
        plan_frames(tl, np.zeros(0), None, None)
    with pytest.raises(UserError, match=r"t.yaml:4: lyrics_snap: beat: no beats were found in the audio"):
        plan_frames(tl, np.zeros(0), 120.0, None)
