#!/usr/bin/env python3
"""template.yaml for prebuilt zips: `sam deploy` without a Rust toolchain.

Each AWS::Serverless::Function loses its `Metadata` (BuildMethod rust-cargolambda and its
BuildProperties, which would make `sam build` compile it) and gains `CodeUri: <binary>.zip`
(or `s3://BUCKET/PREFIX<binary>.zip` with --s3-prefix), its binary's zip: usage-rollup takes
budget-check's. Nothing else changes. scripts/release
writes dist/template.yaml with it next to the zips, so that

    sam deploy -t dist/template.yaml --resolve-s3 --parameter-overrides ...

uploads the released zips as they are. tests/deploy/test_release.py checks the transformation
on the real template.

Usage: scripts/release_template.py TEMPLATE OUT [--s3-prefix s3://bucket/prefix/]
"""

import argparse
import pathlib
import re
import sys

# a function's build metadata, as template.yaml writes it (one form, so that the
# transformation is a plain text edit that keeps every comment and short tag)
METADATA = re.compile(
    r"^(  (?P<logical>\w+):\n    Type: AWS::Serverless::Function\n)"
    r"    Metadata:\n      BuildMethod: rust-cargolambda\n      BuildProperties: \{ Binary: (?P<binary>[a-z0-9-]+) \}\n",
    re.M,
)


def prebuilt(text, code_uri=lambda binary: f"{binary}.zip"):
    """The template with every function's build metadata replaced by its zip's CodeUri."""
    functions = text.count("    Type: AWS::Serverless::Function\n")
    found = []

    def replace(match):
        found.append((match["logical"], match["binary"]))
        return match.group(1)

    text = METADATA.sub(replace, text)
    if len(found) != functions or functions == 0:
        raise ValueError(f"{functions} functions, {len(found)} with the expected build metadata: template.yaml changed form")
    for logical, binary in found:
        # the function's own `    Properties:`, after its Type line and its comments
        head = re.search(
            r"^  " + re.escape(logical) + r":\n    Type: AWS::Serverless::Function\n(?:    #.*\n)*    Properties:\n",
            text,
            re.M,
        )
        if head is None:
            raise ValueError(f"{logical}: no Properties after its Type and comments")
        text = text[: head.end()] + f"      CodeUri: {code_uri(binary)}\n" + text[head.end():]
    if "rust-cargolambda" in text:
        raise ValueError("a BuildMethod is left")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--s3-prefix", help="s3://bucket/prefix/ where the zips were uploaded (default: next to OUT)")
    args = parser.parse_args(argv)
    if args.s3_prefix:
        if not args.s3_prefix.startswith("s3://"):
            parser.error("--s3-prefix starts with s3://")
        prefix = args.s3_prefix if args.s3_prefix.endswith("/") else args.s3_prefix + "/"
        code_uri = lambda binary: f"{prefix}{binary}.zip"  # noqa: E731
    else:
        code_uri = lambda binary: f"{binary}.zip"  # noqa: E731
    args.out.write_text(prebuilt(args.template.read_text(), code_uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
