"""lmshrink entry point: a LightningCLI (subcommands fit / validate / test).

    python train.py fit --config configs/teacher/stereoset_minilm.yaml
    python train.py fit --config configs/teacher/stereoset_minilm.yaml --ckpt_path last   # resume
    python train.py fit --config configs/teacher/stereoset_minilm.yaml --config configs/trainer/ddp_cpu.yaml
"""

from lmshrink.cli import main

if __name__ == "__main__":
    main()
