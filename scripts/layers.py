#!/usr/bin/env python3
"""The import graph of spendguard's library crates, module by module.

Usage: scripts/layers.py [--graph] [--crate NAME=FOLDER]

`--crate` checks one folder as one crate instead of the layers below (how the single core crate
of before the renovation was measured: `--crate spendguard_core=shared/src`).

Reads every non-test `.rs` file of the crates below (the part of a file before its first
`#[cfg(test)]`), resolves each `crate::…`, `super::…` and `spendguard_*::…` path to the module
that defines it, and checks:
  1. no circle: within each crate, the modules' imports form no cycle;
  2. no arrow back up: a crate names only the crates below it (LAYERS), never one above or
     beside it that is not listed (Cargo forbids cycles between crates; this also forbids an
     adapter naming another adapter, or the domain naming anything).
Exits 1 naming every cycle and every forbidden arrow. `--graph` prints each module's imports.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# crate name -> (source folder, the crates it may name)
LAYERS = {
    "spendguard_domain": ("domain/src", set()),
    "spendguard_app": ("app/src", {"spendguard_domain"}),
    "spendguard_aws": ("adapters/aws/src", {"spendguard_domain", "spendguard_app"}),
    "spendguard_local": ("adapters/local/src", {"spendguard_domain", "spendguard_app"}),
    "spendguard_http": ("adapters/http/src", {"spendguard_domain", "spendguard_app"}),
}

PATH = re.compile(r"\b(crate|super|self|spendguard_[a-z_]+)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{)?")


def modules(src: pathlib.Path) -> dict[tuple[str, ...], pathlib.Path]:
    """Module path -> file, for every .rs file of a crate's source folder."""
    out = {}
    for f in sorted(src.rglob("*.rs")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def code_of(f: pathlib.Path) -> str:
    text = f.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    # comments and string literals do not import anything
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def braces(text: str, start: int) -> list[str]:
    """The comma-separated items of the `{…}` group opening at `start`, nested groups flattened
    into their first segment."""
    depth, i, item, items = 0, start, "", []
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth > 1:
                item += c
        elif c == "}":
            depth -= 1
            if depth == 0:
                items.append(item)
                break
            item += c
        elif c == "," and depth == 1:
            items.append(item)
            item = ""
        else:
            item += c
        i += 1
    return [re.split(r"[\s{]", it.strip(), maxsplit=1)[0] for it in items if it.strip()]


def resolve(mods, here: tuple[str, ...], head: str, rest: list[str]):
    """The longest module prefix a path names (None: outside this crate's modules)."""
    if head == "crate":
        base = []
    elif head == "super":
        base = list(here[:-1])
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif head == "self":
        base = list(here)
    else:
        return None
    path = base + rest
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


def graph(crate: str, src: pathlib.Path):
    mods = modules(src)
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in mods}
    crates: dict[tuple[str, ...], set[str]] = {m: set() for m in mods}
    for here, f in mods.items():
        text = code_of(f)
        # a file's own module path is its parent for `super`, itself for `self`
        for m in PATH.finditer(text):
            head, tail, group = m.group(1), m.group(2), m.group(3)
            rest = [p for p in tail.split("::") if p]
            if head.startswith("spendguard_"):
                if head != crate:
                    crates[here].add(head)
                continue
            tails = [rest + [g] for g in braces(text, m.end() - 1)] if group else [rest]
            for t in tails:
                target = resolve(mods, here, head, [p for p in t if p])
                if target is not None and target != here and target != ():
                    # a parent module's own items count; its children are reached directly
                    edges[here].add(target)
    return mods, edges, crates


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def name(m: tuple[str, ...]) -> str:
    return "::".join(m) or "(root)"


def main() -> int:
    args = sys.argv[1:]
    show = "--graph" in args
    layers = LAYERS
    if "--crate" in args:
        crate, folder = args[args.index("--crate") + 1].split("=", 1)
        layers = {crate: (folder, set())}
    problems = []
    for crate, (folder, allowed) in layers.items():
        src = ROOT / folder
        if not src.is_dir():
            problems.append(f"{crate}: no source folder {folder}")
            continue
        mods, edges, crates = graph(crate, src)
        # a module reaching into its own children (mod.rs re-exports) is not an arrow up
        for m in edges:
            edges[m] = {t for t in edges[m] if t[: len(m)] != m}
        for comp in cycles(edges):
            problems.append(f"{crate}: circle of {len(comp)} modules: " + ", ".join(map(name, comp)))
        for m, named in sorted(crates.items()):
            for other in sorted(named - allowed):
                problems.append(f"{crate}::{name(m)} names {other}, which is not below it")
        if show:
            print(f"# {crate} ({len(mods)} modules; may name: {', '.join(sorted(allowed)) or 'nothing'})")
            for m in sorted(edges):
                below = sorted(map(name, edges[m])) + sorted(crates[m])
                print(f"  {name(m)} -> {', '.join(below) or '-'}")
    for p in problems:
        print(p)
    print(f"layers: {len(layers)} crates checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
