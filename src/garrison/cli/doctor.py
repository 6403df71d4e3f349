"""`garrison doctor`: check this machine and install; exit 0 when all is well, 1 with the list of problems."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from garrison.cli.common import ConfigOption, settings_from_flags


def doctor(
    config: Path = ConfigOption,
    home: Path = typer.Option(None, help="State directory to check (default ~/.garrison; env GARRISON_HOME)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Skip the test decode (in a child process)."),
) -> None:
    """Report CPU, memory, llama.cpp build, buffers, threads, home permissions, model digests and a decode."""
    from garrison.doctor import diagnose

    settings = settings_from_flags(config, home=home)
    report = diagnose(settings, probe=not no_probe)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report.as_dict())
    raise typer.Exit(0 if report.ok else 1)


def _cores(value: float | None) -> str:
    return "? cores (no /proc/stat)" if value is None else f"{value:.2f} cores"


def _print(data: dict) -> None:
    cpu, memory, llama, home = data["cpu"], data["memory"], data["llama_cpp"], data["home"]
    gib = 1024**3
    lines = [
        f"CPU         {cpu['model']} ({cpu['cores']} usable cores)",
        f"features    {' '.join(cpu['features']) or '-'}{'  (AMX)' if cpu['amx'] else ''}",
        f"threads     {cpu['threads']} per step ({cpu['threads_source']}), {cpu['threads_when_busy']} while other "
        f"processes use the CPUs; they use {_cores(cpu['others_cores'])} now",
        f"memory      {(memory['total_bytes'] or 0) / gib:.1f} GiB total, "
        f"{(memory['available_bytes'] or 0) / gib:.1f} GiB available",
        f"llama.cpp   llama-cpp-python {llama['version']}; extra buffer types: "
        f"{', '.join(llama['extra_buffer_types']) or 'none'}; cpu_extra_buffers {llama['cpu_extra_buffers']} -> "
        f"{llama['cpu_extra_buffers_resolved']}; KV keys {llama['cache_type_k_resolved']} "
        f"(cache_type_k {llama['cache_type_k']})",
        f"            {llama['system_info']}",
        f"home        {home['path']} ({home.get('mode', 'missing')}), "
        + (", ".join(f"{k} {v}" for k, v in home["files"].items()) or "no files"),
    ]
    for model in data["models"]:
        lines.append(f"model       {model['id']}: digest {model['digest']} ({model['path']})")
    decode = data.get("decode")
    if decode and decode.get("ok"):
        buffers = ", ".join(f"{k} {v:.0f} MiB" for k, v in decode["buffer_types"].items())
        lines.append(f"decode      {decode['decode_tok_s']} tok/s ({decode['threads']} threads, {buffers}); "
                     f"memory bound {decode['bandwidth_bound_tok_s']} tok/s at {decode['memcpy_gbs']} GB/s "
                     f"({decode['share_of_bound']:.0%}); prefill {decode['prefill_tok_s']} tok/s")
    elif decode:
        lines.append(f"decode      FAILED: {decode.get('detail') or decode.get('skipped')}")
    typer.echo("\n".join(lines))
    if data["problems"]:
        typer.secho(f"\n{len(data['problems'])} problem(s):", fg=typer.colors.RED)
        for problem in data["problems"]:
            typer.echo(f"  - {problem}")
    else:
        typer.secho("\nall well", fg=typer.colors.GREEN)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
