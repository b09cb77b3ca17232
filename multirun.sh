#!/usr/bin/env bash
# multirun.sh — every figure and table of both papers as Hydra sweeps, in the order a user runs
# them on a GPU node: train the models, run the analyses, prune, then build the reports.
#
#   paper 1 = Lu et al. 2022, "Understanding the Dynamics of DNNs Using Graph Modularity"
#   paper 2 = "Understanding the class separation process of convolutional neural networks"
#
# Usage:
#   ./multirun.sh list                  the steps in order, with what each one produces
#   ./multirun.sh <step> [<step> ...]   run those steps, e.g.  ./multirun.sh train_cifar10 fig4
#   ./multirun.sh all --yes             every step in order (weeks of GPU time: 150-epoch trainings)
#   DRY_RUN=1 ./multirun.sh <step>      print the commands without running them
#
# Environment:
#   OUT           outputs root (default outputs/paper); every step reads/writes fixed folders
#                 under it, so later steps find the checkpoints of earlier ones
#   PYTHON        interpreter (default python)
#   TRAIN_ARGS    extra overrides for every training/pruning job, e.g.
#                 "logger=wandb hydra/launcher=slurm trainer=ddp hydra.launcher.tasks_per_node=4"
#                 (DDP inside a sweep needs the SLURM launcher, see conf/trainer/ddp.yaml)
#   ANALYZE_ARGS  extra overrides for every analysis job, e.g. "logger=wandb device=cuda"
#   DNN_MODULARITY_DATA  dataset root (CIFAR is downloaded there; ImageNet must be there)
#
# Checkpoints: $OUT/train/<dataset>/<model>/checkpoints/last.ckpt (hydra.sweep.subdir=${model.name}).
# Analysis sweeps: $OUT/<figure>/<dataset>/<job>/; `report` writes <sweep>/report/<time>_<id>/.
# A step re-run into its old folders is refused; add overwrite=true to TRAIN_ARGS / ANALYZE_ARGS.
# Every setting of every step and where it comes from (paper text / official code / our choice):
# docs/reproducing.md. Paper 1's presets follow the official code that made the figures (the first
# N test images at its hooks: probe=official); add probe=balanced for the paper's text.
set -euo pipefail

OUT=${OUT:-outputs/paper}
PY=${PYTHON:-python}
read -r -a TRAIN_EXTRA <<<"${TRAIN_ARGS:-}"
read -r -a ANALYZE_EXTRA <<<"${ANALYZE_ARGS:-}"

# Paper 1 Table B2: the nine CIFAR / ImageNet50 models; paper 2 adds resnet56 and MobileNetV2.
CIFAR_MODELS=(vgg11_bn vgg13_bn vgg16_bn vgg19_bn resnet18 resnet34 resnet50 resnet101 resnet152)
PAPER2_EXTRA=(resnet56 mobilenet_v2)
IMAGENET50_MODELS=(imagenet_vgg11_bn imagenet_vgg13_bn imagenet_vgg16_bn imagenet_vgg19_bn
  imagenet_resnet18 imagenet_resnet34 imagenet_resnet50 imagenet_resnet101 imagenet_resnet152)

run() {
  echo "+ $*" >&2
  if [[ -z "${DRY_RUN:-}" ]]; then "$@"; fi
}
join() { local IFS=,; echo "$*"; }
# ckpts <dataset> <model>... -> comma-separated checkpoint list for a ckpt_path sweep
ckpts() {
  local dataset=$1 out=() m
  shift
  for m in "$@"; do out+=("$OUT/train/$dataset/$m/checkpoints/last.ckpt"); done
  join "${out[@]}"
}
train() { run "$PY" -m dnn_modularity.train -m "$@" "${TRAIN_EXTRA[@]}"; }
analyze() { run "$PY" -m dnn_modularity.analyze -m "$@" "${ANALYZE_EXTRA[@]}"; }
analyze1() { run "$PY" -m dnn_modularity.analyze "$@" "${ANALYZE_EXTRA[@]}"; }
prune() { run "$PY" -m dnn_modularity.prune -m "$@" "${TRAIN_EXTRA[@]}"; }
report() { run "$PY" -m dnn_modularity.report dir="$1" "${@:2}"; }

# --- 1. training (paper 1 Sec. 4 recipe: SGD lr 0.01, momentum 0.9, wd 5e-3, batch 256, 150 epochs)
step_train_cifar10() { # 11 CIFAR-10 models: paper 1 Figs. 4-10 and all of paper 2 (150 epochs each)
  train experiment=train_cifar10_vgg16 name=paper_cifar10 \
    model="$(join "${CIFAR_MODELS[@]}" "${PAPER2_EXTRA[@]}")" \
    hydra.sweep.dir="$OUT/train/cifar10" 'hydra.sweep.subdir=${model.name}'
}
step_train_cifar100() { # 9 CIFAR-100 models: paper 1 Fig. 4b, Fig. 10 (CIFAR-100 part)
  train experiment=train_cifar100_vgg16 name=paper_cifar100 model="$(join "${CIFAR_MODELS[@]}")" \
    hydra.sweep.dir="$OUT/train/cifar100" 'hydra.sweep.subdir=${model.name}'
}
step_train_imagenet50() { # 9 ImageNet50 models (paper 1 appendix B.1 classes): Fig. 4c, Fig. 9 right
  train experiment=train_imagenet50_resnet18 name=paper_imagenet50 \
    model="$(join "${IMAGENET50_MODELS[@]}")" \
    hydra.sweep.dir="$OUT/train/imagenet50" 'hydra.sweep.subdir=${model.name}'
}
step_train_dynamics() { # ResNet18 + VGG16, 30 epochs, a checkpoint per epoch: Fig. 6b
  train experiment=train_cifar10_dynamics_resnet18 name=paper_dynamics model=resnet18,vgg16_bn \
    hydra.sweep.dir="$OUT/train/dynamics" 'hydra.sweep.subdir=${model.name}'
}

# --- 2. analyses of paper 1 -------------------------------------------------------------------
step_fig4() { # Fig. 4: curves (mean ± std over 5 blocks of N=500 test images, k=3) of every model
  analyze experiment=fig4_curves ckpt_path="$(ckpts cifar10 "${CIFAR_MODELS[@]}")" \
    hydra.sweep.dir="$OUT/fig4/cifar10"
  analyze experiment=fig4_curves data=cifar100 probe.n=1000 \
    ckpt_path="$(ckpts cifar100 "${CIFAR_MODELS[@]}")" hydra.sweep.dir="$OUT/fig4/cifar100"
  # ImageNet50's folder is sorted by class: a seeded draw, as the official code shuffles ImageNet
  analyze experiment=fig4_curves data=imagenet50 probe.strategy=balanced \
    ckpt_path="$(ckpts imagenet50 "${IMAGENET50_MODELS[@]}")" hydra.sweep.dir="$OUT/fig4/imagenet50"
}
step_fig5() { # Fig. 5: torchvision's pretrained ImageNet ResNets (needs the ImageNet val folder)
  analyze experiment=fig5_imagenet_curves \
    model=imagenet_resnet18,imagenet_resnet34,imagenet_resnet50,imagenet_resnet101,imagenet_resnet152 \
    hydra.sweep.dir="$OUT/fig5/imagenet"
}
step_fig6a() { # Fig. 6a: six attacks (official settings: CW 200 iterations) on VGG16 and ResNet18
  analyze experiment=fig6a_adversarial ckpt_path="$(ckpts cifar10 vgg16_bn resnet18)" \
    hydra.sweep.dir="$OUT/fig6a/cifar10"
}
step_fig6b() { # Fig. 6b: modularity per layer vs epoch beside accuracy (per-epoch checkpoints)
  analyze experiment=fig6b_dynamics \
    analysis.run_dir="$OUT/train/dynamics/resnet18,$OUT/train/dynamics/vgg16_bn" \
    hydra.sweep.dir="$OUT/fig6b/cifar10"
}
step_fig7() { # Fig. 7a (N = 100..1000) and 7b (k = 3..9) on VGG16 and ResNet18
  analyze experiment=fig7a_batch_size ckpt_path="$(ckpts cifar10 vgg16_bn resnet18)" \
    hydra.sweep.dir="$OUT/fig7a/cifar10"
  analyze experiment=fig7b_k ckpt_path="$(ckpts cifar10 vgg16_bn resnet18)" \
    hydra.sweep.dir="$OUT/fig7b/cifar10"
}
step_appendix() { # Figs. B11 (Pearson vs cosine), B12 (random init), B13 (k = 50..400)
  analyze experiment=figB11_pearson ckpt_path="$(ckpts cifar10 "${CIFAR_MODELS[@]}")" \
    hydra.sweep.dir="$OUT/figB11/cifar10"
  analyze experiment=figB12_random_init ckpt_path="$(ckpts cifar10 vgg16_bn resnet18)" \
    hydra.sweep.dir="$OUT/figB12/cifar10"
  analyze experiment=figB13_large_k ckpt_path="$(ckpts cifar10 vgg16_bn resnet18)" \
    hydra.sweep.dir="$OUT/figB13/cifar10"
}
step_fig8() { # Fig. 8: |M_i - M_j| beside linear CKA (ResNet18; VGG16 for comparison)
  analyze experiment=fig8_difference ckpt_path="$(ckpts cifar10 resnet18 vgg16_bn)" \
    hydra.sweep.dir="$OUT/fig8/cifar10"
}

# --- 3. analyses of paper 2 (CIFAR-10) ----------------------------------------------------------
PAPER2_MAIN=(resnet34 vgg19_bn resnet56 mobilenet_v2)                  # Figs. 2-9
PAPER2_APPENDIX=(resnet18 resnet50 resnet101 vgg11_bn vgg16_bn)        # Figs. 11-20
PAPER2_FIG10=(resnet18 resnet34 resnet50 resnet101 resnet56 vgg11_bn vgg16_bn vgg19_bn mobilenet_v2)
step_p2_histograms() { # Figs. 2-5, 11-15: all-pairs similarity histograms of the 10,000 test images
  analyze experiment=p2_fig2_histograms \
    ckpt_path="$(ckpts cifar10 "${PAPER2_MAIN[@]}" "${PAPER2_APPENDIX[@]}")" \
    hydra.sweep.dir="$OUT/p2_fig2/cifar10"
}
step_p2_ring() { # Figs. 6-9, 16-20: ring graphs (N=4000, |E|=40000), grid + GIF per model
  analyze experiment=p2_fig6_ring \
    ckpt_path="$(ckpts cifar10 "${PAPER2_MAIN[@]}" "${PAPER2_APPENDIX[@]}")" \
    hydra.sweep.dir="$OUT/p2_fig6/cifar10"
}
step_p2_fig10() { # Fig. 10: M (paper 2) beside Newman Q (paper 1) for the nine models
  analyze experiment=p2_fig10_m_vs_q ckpt_path="$(ckpts cifar10 "${PAPER2_FIG10[@]}")" \
    hydra.sweep.dir="$OUT/p2_fig10/cifar10"
}

# --- 4. pruning (dnn_modularity.prune, presets conf/experiment/prune_*) -------------------------
step_prune() { # paper 1 Figs. 9, 10 and Table 1; paper 2 Table 1 (each variant fine-tuned 150 epochs)
  local ck=$OUT/train/cifar10
  # Fig. 9 left / Table B4: VGG19_1..6 (last Conv-BN-ReLU units removed back to front)
  prune experiment=prune_vgg19_1,prune_vgg19_2,prune_vgg19_3,prune_vgg19_4,prune_vgg19_5,prune_vgg19_6 \
    ckpt_path="$ck/vgg19_bn/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/vgg19" 'hydra.sweep.subdir=${name}'
  # Fig. 9 middle / Table B3: Res152_5..30 (stage-3 bottlenecks removed back to front)
  prune experiment=prune_resnet152_5,prune_resnet152_11,prune_resnet152_16,prune_resnet152_21,prune_resnet152_26,prune_resnet152_30 \
    ckpt_path="$ck/resnet152/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/resnet152" 'hydra.sweep.subdir=${name}'
  # Fig. 9 right / appendix B: the same cuts of torchvision's ResNet-152 trained on ImageNet50
  prune experiment=prune_imagenet50_resnet152_5,prune_imagenet50_resnet152_11,prune_imagenet50_resnet152_16,prune_imagenet50_resnet152_21,prune_imagenet50_resnet152_26,prune_imagenet50_resnet152_30 \
    ckpt_path="$OUT/train/imagenet50/imagenet_resnet152/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/imagenet50_resnet152" 'hydra.sweep.subdir=${name}'
  # Fig. 10a/b: VGG11_1..3 and the cumulative back-to-front sweep (dM vs dAcc), CIFAR-10 and -100
  prune experiment=prune_vgg11_1,prune_vgg11_2,prune_vgg11_3,prune_vgg11_sweep \
    ckpt_path="$ck/vgg11_bn/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/vgg11_cifar10" 'hydra.sweep.subdir=${name}'
  prune experiment=prune_vgg11_1,prune_vgg11_2,prune_vgg11_3,prune_vgg11_sweep data=cifar100 \
    probe.n=1000 ckpt_path="$OUT/train/cifar100/vgg11_bn/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/vgg11_cifar100" 'hydra.sweep.subdir=${name}'
  # Table 1: the delta rule (tau = 0.03) on the authors' published curve -> [2, 3, 6], and on
  # the parent's own measured curve
  prune experiment=prune_resnet56_table1,prune_resnet56_delta \
    ckpt_path="$ck/resnet56/checkpoints/last.ckpt" \
    hydra.sweep.dir="$OUT/prune/resnet56" 'hydra.sweep.subdir=${name}'
  # Paper 2 Table 1: Criterion I on M for the eight prunable CIFAR-10 models
  prune experiment=prune_paper2_criterion1 \
    ckpt_path="$(ckpts cifar10 resnet18 resnet34 resnet50 vgg11_bn vgg16_bn vgg19_bn resnet56 mobilenet_v2)" \
    hydra.sweep.dir="$OUT/prune/paper2_criterion1"
}
step_fig9() { # Fig. 9 curves of the pruned variants (after step prune) beside their parents
  local v r i
  v=$(join "$OUT/train/cifar10/vgg19_bn/checkpoints/last.ckpt" \
    "$OUT"/prune/vgg19/prune_vgg19_{1,2,3,4,5,6}/checkpoints/last.ckpt)
  r=$(join "$OUT/train/cifar10/resnet152/checkpoints/last.ckpt" \
    "$OUT"/prune/resnet152/prune_resnet152_{5,11,16,21,26,30}/checkpoints/last.ckpt)
  i=$(join "$OUT/train/imagenet50/imagenet_resnet152/checkpoints/last.ckpt" \
    "$OUT"/prune/imagenet50_resnet152/prune_imagenet50_resnet152_{5,11,16,21,26,30}/checkpoints/last.ckpt)
  analyze experiment=fig4_curves ckpt_path="$v" hydra.sweep.dir="$OUT/fig9/vgg19"
  analyze experiment=fig4_curves ckpt_path="$r" hydra.sweep.dir="$OUT/fig9/resnet152"
  analyze experiment=fig4_curves data=imagenet50 probe.strategy=balanced ckpt_path="$i" \
    hydra.sweep.dir="$OUT/fig9/imagenet50_resnet152"
}

# --- 5. reports: combined CSVs and comparison figures of every sweep ---------------------------
step_report() { # dnn_modularity.report on every analysis sweep under $OUT
  local d
  for d in "$OUT"/fig4/* "$OUT"/fig5/* "$OUT"/fig6a/* "$OUT"/fig6b/* "$OUT"/fig7a/* "$OUT"/fig7b/* \
    "$OUT"/figB11/* "$OUT"/figB13/* "$OUT"/fig8/* "$OUT"/fig9/* "$OUT"/p2_fig2/* "$OUT"/p2_fig6/* \
    "$OUT"/p2_fig10/*; do
    [[ -d "$d" ]] && report "$d"
  done
  for d in "$OUT"/figB12/*; do
    [[ -d "$d" ]] && report "$d" include_nulls=true
  done
  return 0
}

# --- 0. a CPU smoke run of the whole chain on digits (minutes) ----------------------------------
step_smoke() { # digits demo: train resnet20 briefly, every analysis, report (checks the set-up)
  local run="$OUT/smoke/train"
  run "$PY" -m dnn_modularity.train experiment=train_demo_digits model=resnet20 trainer.max_epochs=3 \
    callbacks.epoch_checkpoints.every_n_epochs=1 run_dir="$run"
  local ck="$run/checkpoints/last.ckpt"
  analyze1 ckpt_path="$ck" analysis=curve probe.n=100 analysis.repeats=3 run_dir="$OUT/smoke/curve"
  analyze ckpt_path="$ck" analysis=difference,histograms,ring probe.n=200 \
    hydra.sweep.dir="$OUT/smoke/analyses"
  analyze1 ckpt_path="$ck" analysis=adversarial probe.n=100 attack_iteration_cap=5 \
    run_dir="$OUT/smoke/adversarial"
  analyze1 ckpt_path="$ck" analysis=dynamics analysis.source=checkpoints probe.n=200 \
    run_dir="$OUT/smoke/dynamics"
  analyze ckpt_path="$ck" analysis=curve probe.n=100,200,300 analysis.repeats=2 \
    hydra.sweep.dir="$OUT/smoke/ablation_n"
  report "$OUT/smoke/ablation_n"
}

STEPS=(smoke train_cifar10 train_cifar100 train_imagenet50 train_dynamics fig4 fig5 fig6a fig6b
  fig7 appendix fig8 p2_histograms p2_ring p2_fig10 prune fig9 report)

list_steps() {
  local s line
  echo "Steps (run in this order; OUT=$OUT):"
  for s in "${STEPS[@]}"; do
    line=$(grep -E "^step_${s}\(\) \{" "$0" | sed -E 's/^[^#]*# ?//')
    printf '  %-18s %s\n' "$s" "$line"
  done
}

main() {
  if [[ $# -eq 0 ]]; then
    sed -n '2,24p' "$0"
    echo
    list_steps
    exit 2
  fi
  if [[ "$1" == "list" ]]; then
    list_steps
    exit 0
  fi
  local todo=() arg yes=0
  for arg in "$@"; do
    case "$arg" in
      --yes) yes=1 ;;
      all) todo+=("${STEPS[@]:1}") ;;
      *)
        if ! declare -F "step_$arg" >/dev/null; then
          echo "unknown step '$arg'; valid: list all ${STEPS[*]}" >&2
          exit 2
        fi
        todo+=("$arg")
        ;;
    esac
  done
  if [[ " $* " == *" all "* && $yes -eq 0 && -z "${DRY_RUN:-}" ]]; then
    echo "'all' trains ~30 models for 150 epochs each; add --yes to really start it" >&2
    exit 2
  fi
  for arg in "${todo[@]}"; do
    echo "=== step $arg" >&2
    "step_$arg"
  done
}

main "$@"
