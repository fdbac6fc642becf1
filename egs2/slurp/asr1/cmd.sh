# How heavy jobs are launched. Empty: run on this machine (what the demo does).
# On a cluster set launcher prefixes, e.g. train_cmd="srun --gres=gpu:1 --mem=32G" decode_cmd="srun --mem=8G".
train_cmd=""
decode_cmd=""
