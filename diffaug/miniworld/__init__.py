"""The mini world: the CPU world the default pipeline runs in, apart from the paper's modules.

`world` (nbs/05_miniworld): the procedural bird world; `dataset` (nbs/05b_miniworld_dataset): its evaluation species as
a dataset root, prepare's `miniworld` source; `sd` (nbs/69_miniworld_sd): its Stable-Diffusion-format model;
`evaluation` (nbs/70_miniworld_eval): measuring that model (attribute classifier, prompt following); `unet_rounds`
(nbs/70b_miniworld_unet_rounds): a training run's checkpoints, cached latents and U-Net rounds; `model`
(nbs/71_miniworld_model): stage `miniworld_model`, which trained the shipped models/miniworld; `oracle` (nbs/72_oracle):
stage `oracle`, scoring synthetic sets (the world's oracle; CLIP score and LPIPS); `oracle_model`
(nbs/73_miniworld_oracle): stage `miniworld_oracle`, which trained models/oracle.

Written by hand (nbdev exports the modules, not this file): a docstring only, no imports, no side effects
(tests/test_structure.py holds it)."""
