"""An empty quality stage (every document removed earlier) skips its plots quietly.

Seen on a first own-data build where the rules removed every document: the log said
`[quality] plots skipped: ValueError: number sections must be larger than 0.`
"""
from types import SimpleNamespace

from pipeline.quality import QualityStage


def test_plots_of_empty_stage_are_none(tmp_path):
    ctx = SimpleNamespace(path=lambda *parts: str(tmp_path.joinpath(*parts)))
    stage = QualityStage.__new__(QualityStage)
    assert stage._plots({}, {}, ctx) == []
