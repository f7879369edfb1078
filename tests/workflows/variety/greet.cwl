#!/usr/bin/env cwl-runner
# Run through greet_job.yml, a job order that names this tool with `cwl:tool`.
cwlVersion: v1.2
class: CommandLineTool
inputs:
  name: {type: string, inputBinding: {position: 1, prefix: hello}}
  file: {type: File, inputBinding: {position: 2}}
baseCommand: [sh, -c, 'echo "$0 $1"; cat "$2"']
stdout: greeting.txt
outputs:
  greeting: stdout
