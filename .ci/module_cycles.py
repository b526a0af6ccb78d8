"""Checks the module import graph of src/: no cycle, and every import points to its own layer
or a lower one.

Each file is a node; an edge is a `crate::`/`super::`/`self::` path (or a child module's path)
that names an item of another file. Test modules (`#[cfg(test)] mod tests { ... }` at the end
of a file, and files named tests.rs) are left out: tests may use anything.

Usage: python3 .ci/module_cycles.py [src] [-a: print every edge]
"""
import os
import re
import sys

# The layers, lowest first. A module belongs to the layer of the longest prefix listed here;
# README's "Layout" section describes the same table.
LAYERS = [
    ("leaf", ["base", "echo::wire", "echo::settings", "stamp::wire", "stamp::settings", "status::history"]),
    ("domain", ["probe", "echo", "stamp"]),
    ("engine", ["config", "runner", "metrics"]),
    ("app", ["web", "status", "reload", "discovery", "logging", "shutdown"]),
    ("edge", ["cli", "cmd", "console", "fuzzing", ""]),
]


def layer_of(module):
    """The layer index of a module path (a tuple of names)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            parts = tuple(prefix.split("::")) if prefix else ()
            if module[: len(parts)] == parts and len(parts) > best_len:
                best, best_len = index, len(parts)
    return best


def modules(root):
    """Maps each module path to its file, relative to `root`; main.rs is the binary, not a module."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(directory, name), root)
            parts = rel[:-3].split("/")
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts == ["main"]:
                continue
            if parts == ["lib"]:
                parts = []
            found[tuple(parts)] = rel
    return found


def code_of(text):
    """The text without its trailing test module and without line comments."""
    tests = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    if tests:
        text = text[: tests.start()]
    return re.sub(r"//[^\n]*", "", text)


def longest_file(path, files):
    for i in range(len(path), -1, -1):
        if tuple(path[:i]) in files:
            return tuple(path[:i])
    return None


def imports(module, text, files):
    """The modules (files) that `module`'s code names."""
    deps = set()
    parent = list(module[:-1])
    for m in re.finditer(r"\b(crate|super|self)((?:::\s*(?:\w+|\{))+)", text):
        segments = [s.strip() for s in m.group(2).split("::") if s.strip() and s.strip() != "{"]
        if m.group(1) == "crate":
            start = []
        elif m.group(1) == "super":
            start = parent[:]
            while segments and segments[0] == "super":
                segments.pop(0)
                start = start[:-1]
        else:
            start = list(module)
        path = start + [s for s in segments if re.match(r"^\w+$", s)]
        deps.add(longest_file(path, files))
    # Brace groups name several paths at once: crate::a::{b, c::d}.
    for m in re.finditer(r"\b(crate|super)((?:::\w+)*)::\{([^;]*?)\};", text, re.S):
        prefix = [s for s in m.group(2).split("::") if s]
        start = [] if m.group(1) == "crate" else parent[:]
        for item in m.group(3).split(","):
            item = item.strip().split(" as ")[0]
            if item:
                names = [s.strip() for s in item.split("::") if re.match(r"^\w+$", s.strip())]
                deps.add(longest_file(start + prefix + names, files))
    # A child module used by its bare name: `child::Item`.
    for f in files:
        if len(f) == len(module) + 1 and f[: len(module)] == module:
            if re.search(r"(?<![:\w])" + f[-1] + r"::", text):
                deps.add(f)
    deps.discard(None)
    deps.discard(module)
    deps.discard(())  # lib.rs only declares the modules
    return deps


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return found


def name(module):
    return "::".join(module) or "lib"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    root = args[0] if args else "src"
    files = modules(root)
    edges = {}
    for module, rel in files.items():
        if rel.endswith("tests.rs"):
            continue
        with open(os.path.join(root, rel)) as f:
            edges[module] = imports(module, code_of(f.read()), files)
    if "-a" in sys.argv:
        for v in sorted(edges):
            print(name(v), "->", sorted(name(w) for w in edges[v]))

    failed = False
    for component in cycles(edges):
        failed = True
        members = set(component)
        print(len(component), "files in a cycle:")
        for v in sorted(component):
            print("  ", name(v), "->", sorted(name(w) for w in edges[v] if w in members))
    unplaced = sorted(name(v) for v in edges if layer_of(v) is None)
    if unplaced:
        failed = True
        print("modules in no layer (add them to LAYERS):", ", ".join(unplaced))
    for v in sorted(edges):
        for w in sorted(edges[v]):
            lv, lw = layer_of(v), layer_of(w)
            if lv is not None and lw is not None and lw > lv:
                failed = True
                print(f"upward import: {name(v)} ({LAYERS[lv][0]}) uses {name(w)} ({LAYERS[lw][0]})")
    if failed:
        print("import from the defining module one layer down, or move the item to the layer that needs it")
        sys.exit(1)
    print("no module cycle and no upward import in", len(edges), "files")


if __name__ == "__main__":
    main()
