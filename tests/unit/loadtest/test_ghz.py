from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from loadtest.ghz import CONFIGS, PROTOSET, GhzRun, run_ghz


def fake_ghz(tmp_path: Path, report: dict[str, object], exit_code: int = 0) -> Path:
    """A stand-in for ghz that records its arguments and prints `report`."""
    script = tmp_path / "ghz"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path / "args"}\n'
        f"cat <<'EOF'\n{json.dumps(report)}\nEOF\n"
        "echo 'ghz: oops' >&2\n"
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


REPORT = {
    "options": {"total": 200},
    "count": 200,
    "rps": 45.5,
    "errorDistribution": {},
    "statusCodeDistribution": {"OK": 200},
    "latencyDistribution": [
        {"percentage": 50, "latency": 500_000_000},
        {"percentage": 99, "latency": 800_000_000},
    ],
}


def test_the_configs_call_both_methods_with_the_key_from_the_environment() -> None:
    calls = {json.loads(c.read_text())["call"] for c in CONFIGS}
    assert calls == {
        "streamgate.v1.GenerationService.GenerateStream",
        "streamgate.v1.GenerationService.Generate",
    }
    for config in CONFIGS:
        data = json.loads(config.read_text())
        assert "{{.RequestNumber}}" in data["data"]["prompt"]
        assert data["metadata"]["authorization"] == "Bearer {{env `LOADTEST_API_KEY`}}"
        assert "x-user-id" in data["metadata"]


def test_a_run_is_read_from_ghz_json_output(tmp_path: Path) -> None:
    ghz = fake_ghz(tmp_path, REPORT)
    run = run_ghz(ghz, CONFIGS[0], "127.0.0.1:1", protoset=True, env={}, out=tmp_path / "out")
    args = (tmp_path / "args").read_text().split()
    assert args[-1] == "127.0.0.1:1"
    assert ["--protoset", str(PROTOSET)] == args[args.index("--protoset") :][:2]
    assert (run.calls, run.responses, run.p50_ms, run.p99_ms) == (200, 200, 500.0, 800.0)
    assert run.problems() == []
    assert (tmp_path / "out" / f"{CONFIGS[0].stem}-protoset.json").exists()
    reflection = run_ghz(ghz, CONFIGS[0], "h:1", protoset=False, env={}, out=tmp_path)
    assert "--protoset" not in (tmp_path / "args").read_text()
    assert reflection.name.endswith("via reflection")


def test_any_error_or_missing_response_is_a_problem() -> None:
    base = GhzRun("x", 200, 200, {"OK": 200}, {}, 1.0, 1.0, 1.0)
    assert base.problems() == []
    failed = GhzRun("x", 200, 200, {"OK": 199, "Unavailable": 1}, {"rpc error: x": 1}, 1, 1, 1)
    assert failed.problems() == ["1 x rpc error: x", "199 OK responses of 200 for 200 calls"]
    short = GhzRun("x", 200, 150, {"OK": 150}, {}, 1.0, 1.0, 1.0)
    assert short.problems() == ["150 OK responses of 150 for 200 calls"]


def test_ghz_failing_to_run_is_an_error_with_its_message(tmp_path: Path) -> None:
    ghz = fake_ghz(tmp_path, {}, exit_code=2)
    with pytest.raises(RuntimeError, match=r"exit 2.*ghz: oops"):
        run_ghz(ghz, CONFIGS[0], "h:1", protoset=False, env={}, out=tmp_path)
