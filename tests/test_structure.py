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
    assert world == {f'miniworld.{m}' for m in ('world', 'sd', 'evaluation', 'model', 'oracle', 'oracle_model')}, sorted(world)
    assert not [p.name for p in (ROOT/'diffaug').glob('*.py') if 'miniworld' in p.stem or p.stem == 'oracle'], "a flat module is left over"
    body = ast.parse((ROOT/'diffaug'/'miniworld'/'__init__.py').read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value.value, str), "miniworld/__init__.py: a docstring only"
    users = sorted(m for m in table if m not in world and any(t == 'miniworld' or t.startswith('miniworld.') for t in imports_of(m)))
    assert users == ['prepare'], users
