"""Thin adapters to ESPnet 202511 (the only package of espnet_prune that imports ESPnet, with ``bin``).

Importing it registers the encoder/frontend ``pruned_wav2vec2`` and the model ``pruned_espnet`` in ESPnet's
ASR class choices and installs the pruning behaviour on ESPnet's ``ASRTask`` (see ``task.py``). The import
hook installed with the package (``espnet_prune/_espnet_hook.py``) does it whenever ``espnet2.tasks.asr`` is
imported, so stock ``python -m espnet2.bin.asr_train`` and ``Speech2Text`` know the names. A training config
needs only the encoder block; a ``pruning`` block selects ``model: pruned_espnet``
by itself (writing it explicitly is equivalent)::

    input_size: 1                  # raw waveforms: no frontend, no normalize layer
    frontend: null
    normalize: null
    encoder: pruned_wav2vec2
    encoder_conf:
        ssl_checkpoint: /path/to/hubert_base_ls960.pt   # or model_config: {...} | file.yaml, or preset: name
        pruning: conf/pruning/hj_mac_50.yaml             # or the mapping inline; absent = dense fine-tuning
        freeze_cnn_updates: 0                            # CNN weights frozen for the first N updates
        output_layer: null                               # k: output of layer k, layers above dropped
    keep_nbest_models: 1           # gated checkpoints must not be averaged

The frontend ``pruned_wav2vec2`` takes the same keys (plus ``multilayer_feature``) in ``frontend_conf``,
in front of any ESPnet encoder. Training stats add ``loss_task``, ``loss_pruning``, ``expected_params``
(M), ``expected_gmacs``, ``sparsity_*``, ``target_*``, ``lambda1_*``, ``lambda2_*``.
"""

from espnet_prune.espnet.encoder import PrunedWav2Vec2Encoder
from espnet_prune.espnet.frontend import PrunedWav2Vec2Frontend
from espnet_prune.espnet.model import PrunedESPnetASRModel
from espnet_prune.espnet.ssl import ConfigError, PrunableSSL
from espnet_prune.espnet.task import PrunedASRTask

__all__ = [
    "ConfigError",
    "PrunableSSL",
    "PrunedASRTask",
    "PrunedESPnetASRModel",
    "PrunedWav2Vec2Encoder",
    "PrunedWav2Vec2Frontend",
]
