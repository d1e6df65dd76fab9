"""What the study's forkserver imports once for all its ``train.py`` children (see :mod:`lmshrink.study.children`).

Importing this module is its job: it sets what the libraries read at import time (offline Hugging Face hub, the
quiet start-up of :func:`~lmshrink.quiet.quiet_third_party`), then imports what every ``train.py`` run imports:
the CLI (torch, lightning, transformers, torchao, the LightningModules), BERT's and Llama's modeling code (loaded
lazily by transformers) and W&B with the part ``wandb.init`` imports on its first call.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # the study's runs never download (huggingface_hub reads it at import)

from lmshrink.quiet import quiet_third_party  # noqa: E402

quiet_third_party()

import lmshrink.cli  # noqa: E402,F401
import lmshrink.modules  # noqa: E402,F401
import transformers.models.bert.modeling_bert  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401
import wandb  # noqa: E402,F401
import wandb.sdk.launch  # noqa: E402,F401
