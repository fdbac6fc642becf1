# Job launchers, with the roles ESPnet's cmd.sh gives them:
#   train_cmd   CPU jobs (stage 10: statistics)
#   decode_cmd  CPU decoding jobs (stage 12)
#   cuda_cmd    GPU jobs (stage 11: training through espnet2.bin.launch; stage 12 with --gpu_inference true)
# Each is called as Kaldi's run.pl is: <cmd> [--gpu N] [JOB=1:N] LOG COMMAND... (N jobs, one log each).
#
# Local (the default): utils/run_jobs.sh runs the jobs on this machine, in parallel.
# Slurm: Kaldi's utils/slurm.pl with a conf/slurm.conf (both from a Kaldi or ESPnet checkout), e.g.
#   export train_cmd="utils/slurm.pl --mem 4G" decode_cmd="utils/slurm.pl --mem 4G" cuda_cmd="utils/slurm.pl --mem 32G"
#   (DDP over several nodes: ./run.sh --ngpu 4 --num_nodes 2, which espnet2.bin.launch runs with srun)
# SGE: utils/queue.pl likewise, with a conf/queue.conf.
export train_cmd="utils/run_jobs.sh"
export decode_cmd="utils/run_jobs.sh"
export cuda_cmd="utils/run_jobs.sh"
