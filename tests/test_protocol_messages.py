"""What hil check says of a protocol's mistakes: where, what, and what to give instead."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from hil.config import YamlDocument
from hil.errors import ConfigError
from hil.protocol import check_twin, load_protocol

REPO = Path(__file__).resolve().parent.parent


def test_an_oracle_twin_of_a_bench_system_says_why_and_the_kinds_to_give(tmp_path: Path) -> None:
    """It read 'an oracle twin needs a simulated system', nothing said of why, nor of the kinds that would do."""
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("  kind: physics", "  kind: oracle"), encoding="utf-8")
    protocol, document = load_protocol(YamlDocument.read(path))
    bench = SimpleNamespace(instruments={"crossbar": object()})  # an instrument of no simulated world
    with pytest.raises(ConfigError) as caught:
        check_twin(protocol, bench, document)  # type: ignore[arg-type]
    assert str(caught.value) == (f"{path}:14: twin.kind: an oracle twin needs a simulated system (it is the world's "
                                 "hidden calibration), and 'crossbar' plays on the bench; give kind physics, neural or "
                                 "residual")
