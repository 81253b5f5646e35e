#!/usr/bin/env python3
"""Writes the terraform-docs tables (Requirements, Providers, Modules, Resources, Inputs, Outputs)
of every module and example under terraform/ into its README.md, between
<!-- BEGIN_TF_DOCS --> and <!-- END_TF_DOCS -->, in terraform-docs' "markdown table" format.

terraform-docs itself is a Go binary this project cannot install from its registries; this
reads the .tf files with python-hcl2 (tests/requirements.txt). Run it with the test venv:

    .venv/bin/python scripts/terraform-docs.py          # rewrite the READMEs
    .venv/bin/python scripts/terraform-docs.py --check  # exit 1 if one is out of date

tests/deploy/test_terraform_docs.py fails when a README is out of date with its .tf files.
"""

import argparse
import json
import pathlib
import sys

import hcl2

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def directories(root=ROOT):
    """Every module and example: the directories under terraform/ holding .tf files."""
    return sorted(
        d for d in (root / "terraform").glob("*/*")
        if d.is_dir() and any(d.glob("*.tf"))
    )


def _unquote(value):
    """python-hcl2 keeps the quotes of string literals ("\"x\""): read them as JSON strings."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _expression(value):
    """An expression as written (python-hcl2 wraps them in ${...})."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return value


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _text(text):
    """A description: one line, and <function> shown rather than read as HTML."""
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;")


def _default(value):
    if value is None:
        return "`null`"
    if isinstance(value, str) and value.startswith("${"):
        return f"`{_expression(value)}`"
    return f"`{json.dumps(value, sort_keys=True)}`"


def _anchor(kind, name):
    escaped = name.replace("_", "\\_")
    return f'<a name="{kind}_{name}"></a> [{name}](#{kind}\\_{escaped})'


def read(directory):
    """The blocks of a directory's .tf files."""
    parts = {"terraform": [], "provider": [], "module": [], "resource": [], "data": [], "ephemeral": [], "variable": {}, "output": {}}
    for path in sorted(directory.glob("*.tf")):
        parsed = hcl2.loads(path.read_text())
        for block in parsed.get("terraform", []):
            parts["terraform"].append(_unquote(block))
        for block in parsed.get("provider", []):
            parts["provider"].extend(_unquote(block))
        for block in parsed.get("module", []):
            parts["module"].extend(_unquote(block).items())
        for kind in ["resource", "data", "ephemeral"]:
            for block in parsed.get(kind, []):
                for rtype, named in _unquote(block).items():
                    for name in named:
                        parts[kind].append((rtype, name))
        for block in parsed.get("variable", []):
            parts["variable"].update(_unquote(block))
        for block in parsed.get("output", []):
            parts["output"].update(_unquote(block))
    return parts


def render(directory):
    parts = read(directory)
    required_version, providers = None, {}
    for block in parts["terraform"]:
        required_version = block.get("required_version", required_version)
        for required in block.get("required_providers", []):
            providers.update(required)
    used = sorted({t.split("_", 1)[0] for kind in ["resource", "data", "ephemeral"] for t, _ in parts[kind]} | set(parts["provider"]))
    out = ["## Requirements", ""]
    rows = ([("terraform", required_version)] if required_version else []) + sorted((n, p.get("version")) for n, p in providers.items())
    if rows:
        out += ["| Name | Version |", "|------|---------|"]
        out += [f"| {_anchor('requirement', n)} | {_cell(v or 'n/a')} |" for n, v in rows]
    else:
        out += ["No requirements."]
    out += ["", "## Providers", ""]
    if used:
        out += ["| Name | Version |", "|------|---------|"]
        out += [f"| {_anchor('provider', n)} | {_cell(providers.get(n, {}).get('version', 'n/a'))} |" for n in used]
    else:
        out += ["No providers."]
    out += ["", "## Modules", ""]
    if parts["module"]:
        out += ["| Name | Source | Version |", "|------|--------|---------|"]
        out += [f"| {_anchor('module', n)} | {_cell(m['source'])} | {_cell(m.get('version', 'n/a'))} |" for n, m in sorted(parts["module"])]
    else:
        out += ["No modules."]
    out += ["", "## Resources", ""]
    resources = sorted(
        [(f"{t}.{n}", "resource") for t, n in parts["resource"]]
        + [(f"{t}.{n}", "data source") for t, n in parts["data"]]
        + [(f"{t}.{n}", "ephemeral resource") for t, n in parts["ephemeral"]]
    )
    if resources:
        out += ["| Name | Type |", "|------|------|"]
        out += [f"| {name} | {kind} |" for name, kind in resources]
    else:
        out += ["No resources."]
    out += ["", "## Inputs", ""]
    if parts["variable"]:
        out += ["| Name | Description | Type | Default | Required |", "|------|-------------|------|---------|:--------:|"]
        for name, spec in sorted(parts["variable"].items()):
            required = "default" not in spec
            out.append(
                f"| {_anchor('input', name)} | {_text(spec.get('description', 'n/a'))} | `{_cell(_expression(spec.get('type', 'any')))}` "
                f"| {'n/a' if required else _cell(_default(spec['default']))} | {'yes' if required else 'no'} |"
            )
    else:
        out += ["No inputs."]
    out += ["", "## Outputs", ""]
    if parts["output"]:
        out += ["| Name | Description |", "|------|-------------|"]
        out += [f"| {_anchor('output', n)} | {_text(o.get('description', 'n/a'))} |" for n, o in sorted(parts["output"].items())]
    else:
        out += ["No outputs."]
    return "\n".join([BEGIN] + out + [END])


def updated(readme_text, block):
    """The README with its generated block replaced (or appended when it has no markers)."""
    if BEGIN in readme_text and END in readme_text:
        head, rest = readme_text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block + tail
    return readme_text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date READMEs, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for directory in directories():
        readme = directory / "README.md"
        text = readme.read_text() if readme.exists() else f"# {directory.name}\n"
        new = updated(text, render(directory))
        if new != text:
            stale.append(readme.relative_to(ROOT))
            if not args.check:
                readme.write_text(new)
    for path in stale:
        print(f"{path}: {'out of date' if args.check else 'updated'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
