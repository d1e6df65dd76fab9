"""lmshrink entry point: a LightningCLI (subcommands fit / validate / test).

    python train.py fit --config configs/teacher/stereoset_minilm.yaml
    python train.py fit --config configs/teacher/stereoset_minilm.yaml --ckpt_path last   # resume
    python train.py fit --config configs/teacher/stereoset_minilm.yaml --config configs/trainer/ddp_cpu.yaml
"""

from lmshrink.quiet import quiet_third_party

if __name__ == "__main__":
    quiet_third_party()
    from lmshrink.cli import main, own_wandb_service

    own_wandb_service()
    main()
