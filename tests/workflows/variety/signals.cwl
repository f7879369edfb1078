#!/usr/bin/env cwl-runner
# A tool that reports the signals its process ignores, from the SigIgn mask of /proc/self/status.
cwlVersion: v1.2
class: CommandLineTool
baseCommand: [grep, SigIgn, /proc/self/status]
inputs: []
stdout: signals.txt
outputs:
  signals: stdout
