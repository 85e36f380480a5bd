#!/usr/bin/env bash
# EF and device findings for last month's echo studies on a DICOMweb server, written back into
# each study as a DICOM Structured Report, with the records kept as JSON lines.
#   examples/orthanc/last_month_to_sr.sh [DICOMWEB_URL]   (default: a local Orthanc)
# Credentials: ECHOCLIP_DICOMWEB_USER / ECHOCLIP_DICOMWEB_PASSWORD, ECHOCLIP_DICOMWEB_TOKEN, or a
# ~/.netrc entry for the server's host (never in the URL).
# STUDY_DATE overrides the date range (DICOM form, e.g. 20240101-20240131).
set -euo pipefail
url=${1:-${DICOMWEB_URL:-http://localhost:8042/dicom-web}}
work=${WORKDIR:-$(mktemp -d)}
weights=${ECHOCLIP_WEIGHTS:-echo-clip}
first=$(date -d "$(date +%Y-%m-01) -1 month" +%Y%m%d)
last=$(date -d "$(date +%Y-%m-01) -1 day" +%Y%m%d)
range=${STUDY_DATE:-$first-$last}

status=0
echoclip predict-ef --dicomweb "$url" --query ModalitiesInStudy=US --query "StudyDate=$range" \
    --weights "$weights" --sr "$work/sr" --stow --format jsonl > "$work/ef.jsonl" || status=$?
# exit 1: some inputs failed (their records say why) and the rest are done; 2: a usage mistake
if [ "$status" -gt 1 ]; then exit "$status"; fi
studies=$(grep -c '"level": "study"' "$work/ef.jsonl" || true)
echo "$studies studies of $range: records in $work/ef.jsonl, reports in $work/sr and back on the server" >&2
exit "$status"
