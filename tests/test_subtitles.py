"""SRT and WebVTT cues from a transcription's timed segments or words."""

from __future__ import annotations

from _llm_mistral_suite.subtitles import Cue, cues, srt, timed_text, vtt

SEGMENTS = [
    {"type": "transcription_segment", "text": "Hello and welcome.", "start": 0.0, "end": 1.0, "speaker_id": "speaker_1"},
    {"type": "transcription_segment", "text": "This is <b>us</b> & co.", "start": 1.0, "end": 3723.5,
     "speaker_id": "speaker_2"},
]  # fmt: skip


def test_one_cue_per_segment_with_its_speaker():
    assert cues(SEGMENTS, words=False) == [
        Cue(0.0, 1.0, "Hello and welcome.", "speaker_1"),
        Cue(1.0, 3723.5, "This is <b>us</b> & co.", "speaker_2"),
    ]


def test_srt():
    assert srt(cues(SEGMENTS, words=False)) == (
        "1\n00:00:00,000 --> 00:00:01,000\nspeaker_1: Hello and welcome.\n\n"
        "2\n00:00:01,000 --> 01:02:03,500\nspeaker_2: This is <b>us</b> & co.\n"
    )


def test_vtt_escapes_text_and_marks_voices():
    assert vtt(cues(SEGMENTS, words=False)) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v speaker_1>Hello and welcome.\n\n"
        "00:00:01.000 --> 01:02:03.500\n<v speaker_2>This is &lt;b&gt;us&lt;/b&gt; &amp; co.\n"
    )


def test_words_are_gathered_into_short_lines_per_speaker():
    words = [{"text": w, "start": i * 0.5, "end": i * 0.5 + 0.5} for i, w in enumerate(
        "one two three four five six seven eight nine ten eleven twelve".split())]
    words[-1]["speaker_id"] = "speaker_2"
    found = cues(words, words=True)
    assert [cue.text for cue in found] == ["one two three four five six seven eight", "nine ten eleven",
                                           "twelve"]  # fmt: skip
    assert all(len(cue.text) <= 42 for cue in found) and (found[0].start, found[0].end) == (0.0, 4.0)
    assert found[-1].speaker == "speaker_2"
    slow = [{"text": "a", "start": 0.0, "end": 4.0}, {"text": "b", "start": 4.0, "end": 8.0}]
    assert len(cues(slow, words=True)) == 2  # a cue lasts at most 7 s


def test_segments_without_times_or_text_are_skipped():
    assert cues([{"text": "no times"}, {"text": " ", "start": 0, "end": 1}, {"text": "ok", "start": "1", "end": 2}],
                words=False) == [Cue(1.0, 2.0, "ok", None)]


def test_timed_text_lines():
    assert timed_text(cues(SEGMENTS, words=False)) == (
        "[00:00:00.000 --> 00:00:01.000] speaker_1: Hello and welcome.\n"
        "[00:00:01.000 --> 01:02:03.500] speaker_2: This is <b>us</b> & co.\n"
    )
