#!/usr/bin/env python3
"""Finds import circles between the modules of each crate of the workspace.

A module is a file under `src/` (a folder's `mod.rs` and the files beside it are
modules of their own, named by path). An edge A -> B is any `crate::B…` path or
`super::…` path in A that names B (test modules, `#[cfg(test)]` files under a
`tests/` folder, are left out: they may use anything). Prints every circle (a
strongly connected component of more than one module) and exits 1 if there is one.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(src):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if "tests" in rel or rel[-1] in ("main", "tests"):
                continue
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            mods["::".join(rel)] = path
    return mods


def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { … }` blocks: brace-matched from the attribute.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    text = "".join(out)
    return re.sub(r"//[^\n]*", "", text)


def resolve(mod, path, names):
    """The module of `names` a path from `mod` reaches (longest known prefix)."""
    parts = path.split("::")
    if parts[0] == "crate":
        base = []
        parts = parts[1:]
    else:
        base = mod.split("::") if mod else []
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    full = base + parts
    for n in range(len(full), 0, -1):
        cand = "::".join(full[:n])
        if cand in names:
            return cand
    return None


def edges(mods):
    g = {m: set() for m in mods}
    for m, path in mods.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        # `use crate::a::{b, c::d}` groups: expand one level of braces.
        for um in re.finditer(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^;]*?)\}", text):
            for item in re.split(r",", um.group(2)):
                item = item.strip().split(" as ")[0].strip("{} \n")
                if item:
                    t = resolve(m, um.group(1) + "::" + item.split("::")[0], mods)
                    if t and t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                        g[m].add(t)
        for pm in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
            t = resolve(m, pm.group(1), mods)
            # A module and its own parent or children are one unit.
            if t and t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                g[m].add(t)
    return g


def sccs(g):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
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
    for v in g:
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isfile(os.path.join(ROOT, crate, "Cargo.toml")) or not os.path.isdir(src):
            continue
        g = edges(modules(src))
        for comp in sccs(g):
            bad = True
            inner = {m: sorted(t for t in g[m] if t in comp) for m in comp}
            print(f"{crate}: import circle among {', '.join(comp)}")
            for m in comp:
                print(f"    {m or '(lib)'} -> {', '.join(inner[m])}")
    if not bad:
        print("no import circles")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
