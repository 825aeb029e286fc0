#!/usr/bin/env bash
# The wt2_sections learning curve and its ablations (issue 22; README "Learning curve"), as run
# for the figures in the README. Two lanes of one thread each (2 cores); every stage skips what
# is finished, so rerunning the script completes an interrupted curve.
#
#   AWD_DATA_DIR=../shared/corpora bash scripts/ulmfit_curve.sh pretrain   # ~35 min, 2 cores
#   AWD_DATA_DIR=../shared/corpora bash scripts/ulmfit_curve.sh select     # the recipe's choice
#   RECIPE=task.class_weight=balanced AWD_DATA_DIR=../shared/corpora \
#       bash scripts/ulmfit_curve.sh curve            # RECIPE: what `select` chose (now also
#                                                     # ulmfit_curve_clas's default)
#   RECIPE=... AWD_DATA_DIR=../shared/corpora bash scripts/ulmfit_curve.sh ablate
#   python -m src.benchmarks.curve_table outputs/curve --plot docs/ulmfit_curve.png
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
FWD=outputs/ulmfit_wt2_fwd/checkpoints/best.ckpt
BWD=outputs/ulmfit_wt2_bwd/checkpoints/best.ckpt
LMS=("fwd_lm=$FWD" "bwd_lm=$BWD")
# the recipe's overrides, as chosen by `select` (comma-separated src.train overrides)
RECIPE="${RECIPE:-}"
curve() { python -m src.benchmarks.curve threads=1 "$@" > /dev/null; }
# overrides=[...] of the recipe plus the arguments, each element quoted for Hydra
ov() {
    local items=() x
    IFS=',' read -ra recipe <<< "$RECIPE"
    for x in "${recipe[@]}" "$@"; do [ -n "$x" ] && items+=("'$x'"); done
    local IFS=','
    echo "overrides=[${items[*]}]"
}

case "${1:-}" in
pretrain)  # one WikiText-2 epoch each, forwards and backwards, side by side
    python -m src.train experiment=ulmfit_wt2_fwd hydra.run.dir=outputs/ulmfit_wt2_fwd &
    python -m src.train experiment=ulmfit_wt2_bwd hydra.run.dir=outputs/ulmfit_wt2_bwd &
    wait ;;
pretrain2)  # a second epoch of the forward model, in a copy of its run folder (2 threads)
    rm -rf outputs/ulmfit_wt2_fwd_2ep && cp -r outputs/ulmfit_wt2_fwd outputs/ulmfit_wt2_fwd_2ep
    OMP_NUM_THREADS=2 python -m src.train experiment=ulmfit_wt2_fwd \
        hydra.run.dir=outputs/ulmfit_wt2_fwd_2ep trainer.max_epochs=2 \
        ckpt_path=outputs/ulmfit_wt2_fwd_2ep/checkpoints/last.ckpt ;;
select)  # class weights or not, on validation only (300 labels, seed 0, forward)
    curve name=select_cw_none budget=300 "fwd_lm=$FWD" baseline=false "$(ov task.class_weight=none)" &
    curve name=select_cw_balanced budget=300 "fwd_lm=$FWD" baseline=false \
        "$(ov task.class_weight=balanced)" &
    wait ;;
curve)  # 3 subsets below all, one of all, with the recipe
    (for seed in 0 1 2; do curve budget=100 seed=$seed "${LMS[@]}" "$(ov)"; done
     for seed in 0 1 2; do curve budget=1000 seed=$seed "${LMS[@]}" "$(ov)"; done) &
    (for seed in 0 1 2; do curve budget=300 seed=$seed "${LMS[@]}" "$(ov)"; done
     curve budget=null seed=0 "${LMS[@]}" "$(ov)") &
    wait ;;
ablate)  # one lever at a time at 300 labels, seed 0, forward only (reference: the curve's
    # point), one after the other (a third lane beside `curve`)
    common=(budget=300 seed=0 baseline=false)
    curve name=abl_scratch "${common[@]}" scratch=true directions=[fwd] "$(ov)"
    curve name=abl_lm_1000_steps "${common[@]}" fwd_lm=outputs/lm_snapshots/fwd_step1000.ckpt "$(ov)"
    curve name=abl_first_256 "${common[@]}" "fwd_lm=$FWD" "$(ov data.max_len=256)"
    curve name=abl_lr_1e-2 "${common[@]}" "fwd_lm=$FWD" "$(ov optim.lr=1.0e-2)"
    curve name=abl_lm_2_epochs "${common[@]}" directions=[fwd] \
        fwd_lm=outputs/ulmfit_wt2_fwd_2ep/checkpoints/best.ckpt "$(ov)"
    curve name=abl_drop_half "${common[@]}" "fwd_lm=$FWD" "$(ov model.dropout_emb=0.025 \
        model.dropout_input=0.2 model.dropout_hidden=0.15 model.weight_drop=0.25 \
        'task.ps=[0.2,0.05]')"
    wait ;;
*)
    echo "usage: $0 pretrain|pretrain2|select|curve|ablate" >&2
    exit 2 ;;
esac
