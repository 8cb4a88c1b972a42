#!/bin/sh
# Runs every fuzz target in turn for SECS seconds each (niced: the machine is shared),
# logging to fuzz/logs/<target>.log. Usage: fuzz/run_all.sh [SECS] [TARGET...]
cd "$(dirname "$0")" || exit 1
secs=${1:-300}
shift
targets=${*:-"cpon_parse block_codec frame_parse message_decode tunnel_ctl login_params serial_decoder url_parse"}
mkdir -p logs
for t in $targets; do
    dict=""
    [ "$t" = cpon_parse ] && dict="-dict=cpon.dict"
    start=$(date +%s)
    nice -n 10 cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -max_len=4096 $dict \
        > "logs/$t.log" 2>&1
    rc=$?
    echo "$t rc=$rc wall=$(( $(date +%s) - start ))s $(grep -E '^Done [0-9]+ runs' "logs/$t.log")" >> logs/summary.txt
done
