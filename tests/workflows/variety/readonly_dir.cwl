#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: CommandLineTool
doc: A directory its tool makes read-only (0555) after writing a file and a subdirectory into it.
baseCommand: [sh, -c, 'mkdir -p locked/sub && echo kept > locked/inside.txt && chmod 0555 locked/sub locked']
inputs: []
outputs:
  locked:
    type: Directory
    outputBinding: {glob: locked}
