"""uv's flags for the package indexes pip is configured with here (find-links, constraint, extra/index URLs).

uv does not read pip's configuration; scripts/install.sh and scripts/lock.sh hand it over with this, with pip's
rules: a local index that does not exist is skipped (pip skips it, uv would fail on it)."""
import os, shlex, subprocess, sys

FLAGS = {'find-links': '--find-links', 'constraint': '--constraint', 'extra-index-url': '--extra-index-url',
         'index-url': '--index-url'}


def uv_args() -> list:
    out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
    args = []
    for line in out.splitlines():
        key, _, val = line.partition('=')
        name = key.split('.', 1)[-1]
        if name not in FLAGS: continue
        for v in shlex.split(val.strip().strip("'\"")):
            path = v[len('file://'):] if v.startswith('file://') else v if v.startswith('/') else None
            if path is not None and not os.path.exists(path): continue
            args += [FLAGS[name], v]
    return args


if __name__ == '__main__':
    print(shlex.join(uv_args()))
