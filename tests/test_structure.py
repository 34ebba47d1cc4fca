"""The package's rooms (issue 26): imports go down the notebook table (DEVELOPING.md's module map), and the demos' and
tests' made-up inputs (`diffaug.fixtures`) stay out of the stages' code. Static: the exported modules are parsed, not imported."""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Imports that still run against the table, each with why it is not resolved yet. The check fails on a new one, and on a
# listed one that is gone (shorten the list).
EXCEPTIONS = {}  # none left: the command lines come last (params 91 < experiments 93 < rehearsal 94 < augment 96 < pipeline 97)


def module_table() -> dict:
    "{module: its notebook's stem} for every notebook with a `default_exp`; the stems sort as the table does."
    out = {}
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
        if m: out[m.group(1)] = nb.stem
    return out


def module_file(module: str) -> Path:
    "The file of an exported module: `miniworld.world` -> diffaug/miniworld/world.py."
    return ROOT/'diffaug'/(module.replace('.', '/') + '.py')


def _module_of(parts: list) -> str:
    "The exported module an import names (its longest prefix that is a module file; a package: its dotted name)."
    for n in range(len(parts), 0, -1):
        if module_file('.'.join(parts[:n])).is_file(): return '.'.join(parts[:n])
    return '.'.join(parts)


def imports_of(module: str) -> set:
    "The diffaug modules (dotted below `diffaug`) that `module_file(module)` imports, at its top or inside its functions."
    got, pkg = set(), module.split('.')[:-1]
    for n in ast.walk(ast.parse(module_file(module).read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level: base = pkg[:len(pkg) - (n.level - 1)] + (n.module.split('.') if n.module else [])
            elif n.module and (n.module == 'diffaug' or n.module.startswith('diffaug.')): base = n.module.split('.')[1:]
            else: continue
            got |= {_module_of(base + [a.name]) if module_file('.'.join(base + [a.name])).is_file() else _module_of(base) for a in n.names}
        elif isinstance(n, ast.Import):
            got |= {_module_of(a.name.split('.')[1:]) for a in n.names if a.name.startswith('diffaug.')}
    return got - {module, ''}


def test_imports_go_down_the_table():
    table = module_table()
    assert {'core', 'pipeline', 'fixtures'} <= set(table), sorted(table)
    up = {(m, t) for m in table for t in imports_of(m) if t in table and table[t] > table[m]}
    new = sorted(f"{m} ({table[m]}) imports {t} ({table[t]})" for m, t in up - set(EXCEPTIONS))
    assert not new, "imports against the notebook table (number the chapters so the imported one comes first, or move the function):\n" + '\n'.join(new)
    gone = sorted(set(EXCEPTIONS) - up)
    assert not gone, f"resolved, remove from EXCEPTIONS: {gone}"


def test_every_exported_module_has_its_chapter():
    table = module_table()
    lib = ROOT/'diffaug'
    mods = {'.'.join(p.relative_to(lib).with_suffix('').parts) for p in lib.rglob('*.py')
            if not any(part.startswith('_') for part in p.relative_to(lib).parts)}
    assert mods == set(table), (sorted(mods - set(table)), sorted(set(table) - mods))


def test_stages_do_not_reach_the_fixtures():
    "A stage's code (its module and every module it imports, transitively) never imports diffaug.fixtures; a demo cell does."
    from diffaug.params import STAGES
    module_of = {nb: m for m, nb in module_table().items()}
    for name, st in STAGES.items():
        seen, todo = set(), [module_of[Path(st.notebook).stem]]
        while todo:
            m = todo.pop()
            if m in seen: continue
            seen.add(m); todo += [t for t in imports_of(m) if module_file(t).exists()]
        assert 'fixtures' not in seen, f"stage {name}: its code imports diffaug.fixtures ({sorted(seen)})"
    importers = sorted(m for m in module_table() if 'fixtures' in imports_of(m))
    assert importers == ['processes'], importers  # the CPU two-process rehearsal's toy split; no other module


def test_docs_tooling_is_not_the_runner():
    "scripts/docs.py's helpers live in diffaug.doctools, which imports no diffaug module; the runner does not import it."
    assert imports_of('doctools') == set()
    assert 'doctools' not in imports_of('pipeline')
    docs = (ROOT/'scripts'/'docs.py').read_text()
    assert 'from diffaug.doctools import' in docs and 'from diffaug.pipeline import' not in docs


def test_the_mini_world_is_a_subpackage():
    """The CPU world (the world, its SD model, its evaluation, its oracle and their training stages) is `diffaug.miniworld`,
    apart from the paper's modules: its `__init__.py` is a docstring only (nothing imported, no side effects), and of the
    paper's modules only `prepare` (its `miniworld` source, inside the function) reaches into it."""
    table = module_table()
    world = {m for m in table if m.startswith('miniworld.')}
    assert world == {f'miniworld.{m}' for m in ('world', 'dataset', 'sd', 'evaluation', 'unet_rounds', 'model', 'oracle',
                                                'oracle_model', 'backbone')}, sorted(world)
    assert not [p.name for p in (ROOT/'diffaug').glob('*.py') if 'miniworld' in p.stem or p.stem == 'oracle'], "a flat module is left over"
    body = ast.parse((ROOT/'diffaug'/'miniworld'/'__init__.py').read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value.value, str), "miniworld/__init__.py: a docstring only"
    users = sorted(m for m in table if m not in world and any(t == 'miniworld' or t.startswith('miniworld.') for t in imports_of(m)))
    assert users == ['prepare'], users


# Lines a reader takes in (issue 26): in the package and in the notebooks' exported cells, no line over 120 characters,
# one statement per line (no `;`), no exported cell over 60 lines unless it says why (`# long: <reason>`).
# /work/tools/reflow.py (outside the repository) fixes what breaks them, touching only the offending lines.
WIDTH, CELL_LINES = 120, 60


def package_files() -> list:
    return sorted(p for p in (ROOT/'diffaug').rglob('*.py') if p.name != '_modidx.py')  # the mini world's subpackage too


def export_cells() -> list:
    "[(where, source)] of every `#| export` cell: where is `nbs/<notebook> cell <n>`."
    out = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and re.match(r'#\|\s*export\s*$', src.split('\n', 1)[0]):
                out.append((f'nbs/{nb.name} cell {i}', src))
    return out


def nbdev_header(src: str) -> set:
    """The lines nbdev writes itself at a module's top, not from a code cell: the module docstring (the notebook's
    `> description`) and `__all__` (its first line is 120 characters of names after `__all__ = `)."""
    tree, out = ast.parse(src), set()
    for n in tree.body:
        if isinstance(n, ast.Expr) and n is tree.body[0] and isinstance(n.value, ast.Constant) or \
           isinstance(n, ast.Assign) and [getattr(t, 'id', '') for t in n.targets] == ['__all__']:
            out |= set(range(n.lineno, n.end_lineno + 1))
    return out


def long_lines(src: str, skip=frozenset()) -> list:
    return [(i, len(l)) for i, l in enumerate(src.split('\n'), 1) if len(l) > WIDTH and i not in skip]


def semicolon_lines(src: str) -> list:
    "The lines holding a `;` statement separator (tokens: a `;` inside a string or a comment is not one)."
    import io, tokenize
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    return sorted({t.start[0] for t in toks if t.type == tokenize.OP and t.string == ';'})


def test_lines_fit_in_120_characters():
    bad = [f"{p.relative_to(ROOT)}:{i} ({n} characters)" for p in package_files()
           for s in [p.read_text()] for i, n in long_lines(s, nbdev_header(s))]
    bad += [f"{w} line {i} ({n} characters)" for w, s in export_cells() for i, n in long_lines(s)]
    assert not bad, f"{len(bad)} lines over {WIDTH} characters:\n" + '\n'.join(bad[:50])


def test_one_statement_per_line():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in package_files() for i in semicolon_lines(p.read_text())]
    bad += [f"{w} line {i}" for w, s in export_cells() for i in semicolon_lines(s)]
    assert not bad, f"{len(bad)} lines holding several statements (`;`):\n" + '\n'.join(bad[:50])


def test_exported_cells_are_short():
    bad = [f"{w}: {n} lines" for w, s in export_cells() for n in [len(s.rstrip('\n').split('\n'))]
           if n > CELL_LINES and not re.search(r'^\s*# long: \S', s, re.M)]
    why = "split at a def/class, or say why: `# long: <reason>`"
    assert not bad, f"exported cells over {CELL_LINES} lines ({why}):\n" + '\n'.join(bad)


def test_the_line_checks_can_fail():
    "Each check finds a made-up offender (and nothing in its look-alikes: `;` in a string or a comment)."
    assert semicolon_lines("a = 1; b = 2\nc = 'x; y'  # p; q\nif a: b; c\n") == [1, 3]
    assert long_lines('x = 1\n' + 'y = ' + '1' * 120) == [(2, 124)]
    assert nbdev_header('"""' + 'd' * 130 + '"""\n__all__ = [\'a\']\nx = 1\n') == {1, 2}


MODULE_LINES = 400


def test_no_module_over_400_lines():
    "No exported module over 400 lines (issue 26): a chapter holds one idea; a longer one splits into chapters of its own."
    bad = [f"{p.relative_to(ROOT)}: {n} lines" for p in package_files() for n in [len(p.read_text().splitlines())]
           if n > MODULE_LINES]
    assert not bad, f"modules over {MODULE_LINES} lines (split by meaning into chapters):\n" + '\n'.join(bad)
