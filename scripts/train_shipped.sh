#!/usr/bin/env bash
# Train every shipped model through the real bids_sr-train command, one at a time, and copy
# weights + cards into bids_sr/data/weights/. Data: the BIDS view of ../shared/data built by
# scripts/shared_data_bids.py (training: colin27, brainchop, openms07, mni152 at half weight;
# validation: chris, openms19). CPU budget settings (this session had no GPU); on a GPU
# machine pass DEVICE=cuda and raise the iterations (ITER_SCALE=10, say). The shipped fsrcnn and
# srgan files were trained with THREADS=1 (two runs shared the two cores), and they and espcn
# with --val-every 100 --checkpoint-every 250; each card holds its exact command.
#
# Usage: scripts/train_shipped.sh [STEM ...]   (default: all; e.g. fsrcnn_x2x2x2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
ITER_SCALE=${ITER_SCALE:-1}
BIDS=${BIDS:-scratch/shared_bids}
WORK=${WORK:-scratch/train}
WEIGHTS=bids_sr/data/weights
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-15}

"$PY" scripts/shared_data_bids.py --out "$BIDS" >/dev/null
TRAIN=(--participant-label colin27 brainchop openms07 mni152 --subject-weight mni152=0.5)
COMMON=(--device "$DEVICE" --nthreads "$THREADS" --seed 0)
it() { echo $(( $1 * ITER_SCALE )); }

declare -A CMD
CMD[gradfilter_x2x2x2]="gradfilter --scale 2 --degradation gaussian --patch-size 7 --sample-stride 3 --validation-label chris openms19"
CMD[fsrcnn_x2x2x2]="fsrcnn --scale 2 --degradation gaussian --iterations $(it 4000) --patch-size 32 --batch-size 4 --lr 1e-3 --loss-margin 6 --background-fraction 0.1 --validation-label chris openms19"
CMD[espcn_x2x2x2]="espcn --scale 2 --degradation gaussian --iterations $(it 2000) --patch-size 24 --batch-size 8 --loss-margin 4 --background-fraction 0.1 --validation-label chris openms19"
CMD[srrecnn_x2x2x2]="srrecnn --scale 2 --degradation gaussian --iterations $(it 700) --patch-size 16 --batch-size 8 --config {\"features\":32} --validation-label chris openms19"
# the x2 guided model as the thick-slice one: MNI152 pair held out, 6000 iterations (both were
# trained before the misregistration augmentation existed: 0 0 reproduces them)
CMD[srrecnn-t2w_x2x2x2]="srrecnn-t2w --scale 2 --degradation gaussian --iterations $(it 6000) --patch-size 16 --batch-size 8 --config {\"features\":32} --loss-margin 2 --uninformative-reference-fraction 0.15 --reference-misregistration 0 0 --validation-label openms19 mni152"
CMD[srgan_x2x2x2]="srgan --scale 2 --degradation gaussian --iterations $(it 6000) --pretrain-iterations $(it 4500) --lr 2e-4 --patch-size 16 --batch-size 4 --loss-margin 2 --background-fraction 0.1 --validation-label chris openms19"
CMD[srrecnn_x1x1x4]="srrecnn --scale 1 1 4 --degradation slice --iterations $(it 700) --patch-size 16 --batch-size 8 --config {\"features\":32} --validation-label chris openms19"
CMD[gradfilter_x1x1x4]="gradfilter --scale 1 1 4 --degradation slice --patch-size 7 --sample-stride 3 --validation-label chris openms19"
# the thick-slice guided model keeps the MNI152 T1w/T2w pair out of training (its second
# validation pair) and learns to ignore references of pure noise or a constant
CMD[srrecnn-t2w_x1x1x4]="srrecnn-t2w --scale 1 1 4 --degradation slice --iterations $(it 6000) --patch-size 16 --batch-size 8 --config {\"features\":32} --loss-margin 2 --uninformative-reference-fraction 0.15 --reference-misregistration 0 0 --validation-label openms19 mni152"
# the FLAIR-guided twin: same recipe and split; MNI152 has no FLAIR, so openms19 is its only
# validation pair (colin27/brainchop get the contrast-randomised reference, openms07 its FLAIR);
# guided models train with the default --reference-misregistration 1 2 (mm, degrees)
CMD[srrecnn-flair_x1x1x4]="srrecnn-flair --scale 1 1 4 --degradation slice --iterations $(it 6000) --patch-size 16 --batch-size 8 --config {\"features\":32} --loss-margin 2 --uninformative-reference-fraction 0.15 --validation-label openms19"
# a second stage: fine-tune the first stage's weights (--init) with these options (the
# thick-slice one with the misregistration augmentation)
declare -A THEN
THEN[srrecnn-t2w_x2x2x2]="--scale 2 --degradation gaussian --iterations $(it 3000) --lr 3e-4 --patch-size 16 --batch-size 8 --loss-margin 2 --uninformative-reference-fraction 0.15 --reference-misregistration 0 0 --validation-label openms19 mni152 --seed 1"
THEN[srrecnn-t2w_x1x1x4]="--scale 1 1 4 --degradation slice --iterations $(it 3000) --lr 3e-4 --patch-size 16 --batch-size 8 --loss-margin 2 --uninformative-reference-fraction 0.15 --reference-misregistration 1 2 --validation-label openms19 mni152 --seed 1"
# a third stage (the x2 pair, 2026-12-04): fine-tune again with template-like smoothed copies
# of every training participant (an average brain such as MNI152 is smoother than any single
# scan) and, for the guided model, blurred synthesised references; the mono twin gets the
# same stage from its first stage's weights (THEN), so the two models of the guided card's
# comparison have the same data and a like budget
declare -A THEN2
THEN2[srrecnn-t2w_x2x2x2]="--scale 2 --degradation gaussian --iterations $(it 6000) --lr 1e-4 --patch-size 16 --batch-size 8 --loss-margin 2 --uninformative-reference-fraction 0.15 --reference-misregistration 0 0 --reference-blur 1.0 --smoothed-copies 0.6 1.0 --validation-label openms19 mni152 --seed 2"
THEN[srrecnn_x2x2x2]="--scale 2 --degradation gaussian --iterations $(it 6000) --lr 1e-4 --patch-size 16 --batch-size 8 --loss-margin 2 --smoothed-copies 0.6 1.0 --validation-label openms19 mni152 --seed 2"
declare -A TRAIN_OF
# the mono models are the guided models' twins: they too keep the MNI152 pair out, so a
# guided card's gain over mono on mni152 compares two models that never saw it (shipped
# with THREADS=1)
TRAIN_OF[srrecnn_x2x2x2]="--participant-label colin27 brainchop openms07"
TRAIN_OF[srrecnn_x1x1x4]="--participant-label colin27 brainchop openms07"
TRAIN_OF[srrecnn-t2w_x1x1x4]="--participant-label colin27 brainchop openms07"
TRAIN_OF[srrecnn-t2w_x2x2x2]="--participant-label colin27 brainchop openms07"
TRAIN_OF[srrecnn-flair_x1x1x4]="--participant-label colin27 brainchop openms07"
ORDER=(gradfilter_x2x2x2 fsrcnn_x2x2x2 espcn_x2x2x2 srrecnn_x2x2x2 srrecnn-t2w_x2x2x2
       srgan_x2x2x2 srrecnn_x1x1x4 gradfilter_x1x1x4 srrecnn-t2w_x1x1x4 srrecnn-flair_x1x1x4)

for stem in "${@:-${ORDER[@]}}"; do
  read -r -a args <<<"${CMD[$stem]}"
  if [[ -n "${TRAIN_OF[$stem]:-}" ]]; then read -r -a train <<<"${TRAIN_OF[$stem]}"; else train=("${TRAIN[@]}"); fi
  method=${args[0]}
  out="$WORK/$stem"
  echo "=== $stem: $(date -Is)"
  # shellcheck disable=SC2068
  "$PY" -m bids_sr.training.cli "$method" "$BIDS" "$out" ${args[@]:1} "${train[@]}" \
    "${COMMON[@]}" --resume --output-name "$stem"
  if [[ -n "${THEN[$stem]:-}" ]]; then
    read -r -a then <<<"${THEN[$stem]}"
    "$PY" -m bids_sr.training.cli "$method" "$BIDS" "${out}_ft" --init "$out/$stem.safetensors" \
      "${train[@]}" "${COMMON[@]}" "${then[@]}" --resume --output-name "$stem"
    out="${out}_ft"
  fi
  if [[ -n "${THEN2[$stem]:-}" ]]; then
    read -r -a then2 <<<"${THEN2[$stem]}"
    "$PY" -m bids_sr.training.cli "$method" "$BIDS" "${out}2" --init "$out/$stem.safetensors" \
      "${train[@]}" "${COMMON[@]}" "${then2[@]}" --resume --output-name "$stem"
    out="${out}2"
  fi
  cp "$out/$stem.safetensors" "$out/$stem.card.json" "$out/$stem.md" "$WEIGHTS/"
  echo "=== $stem done: $(date -Is)"
done
