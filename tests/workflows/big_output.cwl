#!/usr/bin/env cwl-runner
# Writes a large output file: for tests that need the store-output step to take a while.
cwlVersion: v1.2
class: CommandLineTool
doc: Writes `megabytes` MiB of zeros to big.bin.
baseCommand: [sh, -c, 'head -c "$(($0 * 1048576))" /dev/zero > big.bin']
inputs:
  megabytes:
    type: int
    default: 300
    inputBinding: {position: 1}
outputs:
  big:
    type: File
    outputBinding: {glob: big.bin}
