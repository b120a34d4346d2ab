"""The benchmark script's presets and flags (the script itself is run by hand: README "Performance")."""

from __future__ import annotations

import pytest

from tests.bench_gateway import PRESETS, parse_args


def test_quick_preset_fills_what_the_flags_leave_out():
    args = parse_args(["--quick", "--requests", "50", "--redis", "redis://127.0.0.1:6379/4", "--processes", "2"])

    assert args.requests == 50
    assert (args.serial, args.warmup, args.rounds) == tuple(PRESETS["quick"][k] for k in ("serial", "warmup", "rounds"))
    assert (args.redis, args.processes, args.server) == ("redis://127.0.0.1:6379/4", 2, "daphne")


def test_without_a_preset_the_full_run_measures_more():
    args = parse_args([])

    assert args.requests == PRESETS["full"]["requests"] > PRESETS["quick"]["requests"]
    assert (args.keys, args.log_rows) == (1000, 10**6)


@pytest.mark.parametrize("argv", [["--requests", "0"], ["--processes", "0"], ["--server", "gunicorn"],
                                  ["--without", "log,cache"], ["--pin", "--processes", "2"]])
def test_impossible_settings_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error" in capsys.readouterr().err
