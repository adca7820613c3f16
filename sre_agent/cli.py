"""Command line: `sre-agent run | replay | capture | export | approve | reject | check-policy`.

Parses argv, reads settings once, and hands over to the operator, replay or capture code.
Every error a user can cause ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from sre_agent.core.policy import Policy, PolicyError, default_policy, load_policy
from sre_agent.core.prompts import PromptError


def version() -> str:
    """The installed package's version (the source checkout's when not installed)."""
    try:
        return metadata.version("sre-agent")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def bundled(*parts: str) -> Path:
    """A data directory shipped with the package (wheel) or found in the source checkout."""
    installed = Path(__file__).parent.joinpath("_data", *parts)
    return installed if installed.exists() else Path(__file__).resolve().parents[1].joinpath(*parts)


def _policy(path: str | None) -> Policy:
    if path:
        return load_policy(path)
    default = bundled("policies", "default.yaml")
    return load_policy(default) if default.exists() else default_policy()


def _cmd_replay(args: argparse.Namespace) -> int:
    from sre_agent.replay import (
        CompareError,
        ReplayOptions,
        compare,
        fallbacks,
        llm_line,
        load_report,
        progress_bar,
        render_table,
        replay,
    )

    policy = _policy(args.policy)
    if args.concurrency < 1:
        raise SystemExit(f"sre-agent: --concurrency must be at least 1, not {args.concurrency}")
    options = ReplayOptions(policy=policy, use_cache=not args.no_cache, concurrency=args.concurrency)
    if args.reasoner == "llm":
        from sre_agent.adapters.llm import LLMConfig, LLMConfigError, OpenAIReasoner

        env = dict(os.environ)
        if args.base_url:
            env["SRE_AGENT_LLM_BASE_URL"] = args.base_url
        if args.model:
            env["SRE_AGENT_LLM_MODEL"] = args.model
        try:
            config = LLMConfig.from_env(env)
        except LLMConfigError as exc:
            raise SystemExit(f"sre-agent: {exc}") from None
        from sre_agent.settings import llm_url_problem

        problem = llm_url_problem(config.base_url) if config else None
        if problem:
            print(f"sre-agent: --base-url / SRE_AGENT_LLM_BASE_URL {problem}", file=sys.stderr)
            return 2
        if config is None:
            raise SystemExit(
                "sre-agent: --reasoner llm needs SRE_AGENT_LLM_BASE_URL or SRE_AGENT_LLM_API_KEY "
                "(or --base-url)"
            )
        # --concurrency is the bound on calls in flight (the operator's SRE_AGENT_LLM_MAX_CONCURRENCY).
        reasoner = OpenAIReasoner(dataclasses.replace(config, max_concurrency=args.concurrency))
        options.reasoner, options.reasoner_id = reasoner, reasoner.reasoner_id
    paths = [Path(p) for p in args.paths] or [bundled("replay", "incidents")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"sre-agent: no such file or directory: {', '.join(missing)}")
    show = progress_bar() if (args.progress or (args.progress is None and sys.stderr.isatty())) else None
    previous = None
    if args.compare:
        try:
            previous = load_report(Path(args.compare))
        except CompareError as exc:
            print(f"sre-agent: {exc}", file=sys.stderr)
            return 2
    report = asyncio.run(replay(paths, options, progress=show, cache_timer=time.monotonic))
    if previous is not None:
        report["comparison"] = {"previous": args.compare, **compare(previous, report)}
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report, explain=args.explain))
    for result in report["results"]:
        if result["error"]:
            print(f"error: {result['error']}", file=sys.stderr)
    llm = llm_line(report["summary"])
    if llm and fallbacks(report) and args.format == "json":  # the table already says it
        print(llm, file=sys.stderr)
    if report["summary"]["errors"]:
        return 1
    return 3 if args.strict and fallbacks(report) else 0


def _cmd_check_policy(args: argparse.Namespace) -> int:
    """Every file is checked: one stdout line per good file, one stderr line per bad one (exit 2)."""
    bad = 0
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            print(f"sre-agent: {exc}", file=sys.stderr)
            bad += 1
            continue
        print(f"{path}: ok (policy {policy.name}, actions: {', '.join(policy.allowed_actions())})")
    return 2 if bad else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from sre_agent.operator.app import run_operator
    from sre_agent.settings import Settings, SettingsError

    env = dict(os.environ)
    if args.policy:
        env["SRE_AGENT_POLICY"] = args.policy
    if args.namespace:
        env["SRE_AGENT_NAMESPACES"] = ",".join(args.namespace)
    if args.standalone:
        env["SRE_AGENT_STANDALONE"] = "1"
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 2
    return run_operator(settings)


def _cmd_capture(args: argparse.Namespace) -> int:
    from sre_agent.adapters.kube.capture import CaptureError, capture_document, capture_to_file
    from sre_agent.adapters.recorded import dump_incident

    try:
        if args.output:
            out = capture_to_file(args.namespace, args.pod, Path(args.output))
            print(f"captured {args.namespace}/{args.pod} to {out}", file=sys.stderr)
        else:
            sys.stdout.write(dump_incident(capture_document(args.namespace, args.pod)))
    except CaptureError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sre_agent.adapters.kube.capture import CaptureError, export_to_dir

    try:
        written = export_to_dir(args.namespace, Path(args.output))
    except CaptureError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 1
    print(f"exported {len(written)} incident(s) to {args.output}", file=sys.stderr)
    return 0


def _cmd_verdict(args: argparse.Namespace) -> int:
    from sre_agent.adapters.kube.approval import ApprovalError, approve_or_reject

    approve = args.command == "approve"
    try:
        verdict = approve_or_reject(
            args.namespace, args.name, approve=approve, reason=None if approve else args.reason
        )
    except ApprovalError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 1
    print(verdict.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sre-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="replay incident files through the decision pipeline and score them")
    rp.add_argument("paths", nargs="*", help="incident files or directories (default: the bundled corpus)")
    rp.add_argument("--reasoner", choices=("rules", "llm"), default="rules",
                    help="who diagnoses: the rule-based diagnoser, or the LLM in SRE_AGENT_LLM_* (default: rules)")  # fmt: skip
    rp.add_argument("--policy", help="policy YAML (default: policies/default.yaml)")
    rp.add_argument("--format", choices=("table", "json"), default="table",
                    help="table for people, json for tools (docs/incident-format.md) (default: table)")  # fmt: skip
    rp.add_argument("--base-url", help="OpenAI-compatible endpoint for --reasoner llm")
    rp.add_argument("--model", help="model name for --reasoner llm")
    rp.add_argument("--no-cache", action="store_true", help="ask the LLM for every incident")
    rp.add_argument("--concurrency", type=int, default=8, metavar="N",
                    help="--reasoner llm: LLM calls in flight at once; the report is the same as with 1 "
                         "(default: 8)")  # fmt: skip
    rp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")  # fmt: skip
    rp.add_argument("--strict", action="store_true",
                    help="exit 3 when the LLM did not answer every incident (any fallback to the rules)")  # fmt: skip
    rp.add_argument("--explain", action="store_true",
                    help="table: print each answer's summary, reasoning and fallback reason under its row")  # fmt: skip
    rp.add_argument("--compare", metavar="PREVIOUS.json",
                    help="list incidents whose category, action or policy changed since this earlier "
                         "--format json report, and the change in every score")  # fmt: skip
    rp.set_defaults(func=_cmd_replay)

    run = sub.add_parser("run", help="run the operator (in-cluster, or with KUBECONFIG)")
    run.add_argument("--policy", help="policy YAML (overrides SRE_AGENT_POLICY)")
    run.add_argument("-n", "--namespace", action="append", help="watch only these namespaces")
    run.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    run.set_defaults(func=_cmd_run)

    cap = sub.add_parser("capture", help="write an incident file from a live pod (redacted)")
    cap.add_argument("-n", "--namespace", required=True, help="the pod's namespace")
    cap.add_argument("pod", help="the pod's name, or job/NAME or deployment/NAME for a workload incident")
    cap.add_argument("-o", "--output", help="file to write (default: stdout)")
    cap.set_defaults(func=_cmd_capture)

    exp = sub.add_parser("export", help="turn recorded AgentDecisions into incident files")
    exp.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    exp.add_argument("-o", "--output", required=True, help="directory to write incident files into")
    exp.set_defaults(func=_cmd_export)

    apr = sub.add_parser(
        "approve", help="approve a pending AgentDecision as yourself (recorded in approvedBy)"
    )
    apr.add_argument("name", help="the AgentDecision's name")
    apr.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    apr.set_defaults(func=_cmd_verdict)

    rej = sub.add_parser("reject", help="reject a pending AgentDecision as yourself (recorded in approvedBy)")
    rej.add_argument("name", help="the AgentDecision's name")
    rej.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    rej.add_argument("--reason", help="why (kept in spec.rejectionReason)")
    rej.set_defaults(func=_cmd_verdict)

    chk = sub.add_parser("check-policy", help="validate policy files")
    chk.add_argument("files", nargs="+", help="policy YAML files")
    chk.set_defaults(func=_cmd_check_policy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (PolicyError, PromptError) as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
