#!/usr/bin/env cwl-runner
# A record input of a SchemaDefRequirement type whose File field has secondaryFiles (types.yml).
cwlVersion: v1.2
class: CommandLineTool
requirements:
  InlineJavascriptRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: types.yml
inputs:
  sample: types.yml#Sample
baseCommand: [sh, -c, 'ls "$(dirname "$0")" > sample_dir.txt']
arguments: [$(inputs.sample.reads.path)]
outputs:
  listing: {type: File, outputBinding: {glob: sample_dir.txt}}
