from __future__ import annotations

from pathlib import Path

import pytest
from loadtest.loadgen.mix import MixError, load_mix

from support.processes import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["chat.yaml", "soak.yaml", "capacity.yaml"])
def test_the_shipped_mixes_load(name: str) -> None:
    mix = load_mix(ROOT / "loadtest" / "mixes" / name)
    assert mix.classes and mix.description


def test_each_class_expects_the_end_its_client_causes(tmp_path: Path) -> None:
    mix = load_mix(
        write(
            tmp_path,
            """
classes:
  - {name: read}
  - {name: cancel, cancel_after: [0.1, 0.5]}
  - {name: deadline, deadline: [0.1, 0.2]}
  - {name: custom, expect: [OK, RESOURCE_EXHAUSTED]}
""",
        )
    )
    expected = {c.name: c.expected_codes() for c in mix.classes}
    assert expected == {
        "read": {"OK"},
        "cancel": {"OK", "CANCELLED"},
        "deadline": {"DEADLINE_EXCEEDED"},
        "custom": {"OK", "RESOURCE_EXHAUSTED"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classes: []", "classes: List should have at least 1 item"),
        ("classes: [{name: a, prompt_chars: [300, 20]}]", "prompt_chars: the low end 300"),
        ("classes: [{name: a, cacheable: 1.5}]", "classes.0.cacheable"),
        ("classes: [{name: a, weight: 0}]", "classes.0.weight"),
        ("classes: [{name: a, colour: red}]", "classes.0.colour: Extra inputs"),
        ("classes: [{name: a}, {name: a}]", "class names repeat"),
        (
            "classes: [{name: a, cancel_after: [1, 2], deadline: [1, 2]}]",
            "at most one of cancel_after and deadline",
        ),
        ("classes: [{name: a]", "while parsing"),
    ],
)
def test_a_bad_mix_is_refused_with_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MixError) as raised:
        load_mix(path)
    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)


def test_a_missing_mix_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(MixError, match=r"nothing\.yaml"):
        load_mix(tmp_path / "nothing.yaml")
