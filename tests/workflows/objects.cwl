#!/usr/bin/env cwl-runner
# Inputs and outputs that live in an object store in tests/test_objects.py.
cwlVersion: v1.2
class: CommandLineTool
doc: |
  Report `reads`, its `.bai` (and `^.idx` when present) and every file of `dir` into report.txt;
  copy `dir` to the output Directory `copy`; write `megabytes` MiB of random bytes to big.bin and
  their MD5 to big.md5.
baseCommand: [sh, -c]
arguments:
  - |
    { cat "$0" "$0.bai"; ls "`dirname "$0"`"; cd "$1" && find . -type f | sort | while read f; do echo "$f: `cat "$f"`"; done; } > "$2/report.txt" &&
    cp -R "$1" "$2/copy" && dd if=/dev/urandom of="$2/big.bin" bs=1048576 count="$3" 2>/dev/null && md5sum < "$2/big.bin" | cut -d' ' -f1 > "$2/big.md5"
  - $(inputs.reads.path)
  - $(inputs.dir.path)
  - $(runtime.outdir)
  - $(inputs.megabytes)
inputs:
  reads:
    type: File
    secondaryFiles:
      - .bai
      - pattern: ^.idx
        required: false
  dir: Directory
  megabytes:
    type: int
    default: 1
outputs:
  report:
    type: File
    outputBinding: {glob: report.txt}
  copy:
    type: Directory
    outputBinding: {glob: copy}
  big:
    type: File
    outputBinding: {glob: big.bin}
    secondaryFiles: [^.md5]
