#!/usr/bin/env python
"""Train (or resume) the mini world's SD-format model on CPU; see nbs/71_miniworld_model.ipynb.

Resume after an interruption with the same command: it continues from the last checkpoint in --ckpt.
    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_miniworld.py >> models/miniworld/_ckpt/train.log 2>&1 &
"""
import argparse, os, sys
from pathlib import Path

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ckpt', default='models/miniworld/_ckpt', help='checkpoint folder (resumed from)')
    ap.add_argument('--out', default='models/miniworld', help='where the best EMA model is exported')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    ap.add_argument('--unet-steps', type=int, default=15000)
    ap.add_argument('--max-minutes', type=float, default=None)
    ap.add_argument('--check-minutes', type=float, default=30.0)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch; torch.set_num_threads(a.threads)
    from diffaug.miniworld_model import train_miniworld
    train_miniworld(a.ckpt, a.out, unet_steps=a.unet_steps, max_minutes=a.max_minutes, check_minutes=a.check_minutes, threads=a.threads)

if __name__ == '__main__': main()
