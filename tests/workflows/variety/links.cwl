#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: CommandLineTool
doc: >
  Its output directory holds what cwltool without a container leaves as links: a read-only staged
  input file and directory (links to the inputs) and a link within the outputs.
requirements:
  InitialWorkDirRequirement:
    listing:
      - {entry: $(inputs.file), entryname: staged_file, writable: false}
      - {entry: $(inputs.dir), entryname: staged_dir, writable: false}
inputs:
  file: File
  dir: Directory
baseCommand: [sh, -c, 'echo own > own.txt && ln -s own.txt alias.txt']
outputs:
  out:
    type: Directory
    outputBinding: {glob: .}
