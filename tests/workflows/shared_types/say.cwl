#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: CommandLineTool
doc: Says a sample's id and species.
requirements:
  SchemaDefRequirement:
    types:
      - $import: types.yml
inputs:
  s:
    type: types.yml#sample
    inputBinding: {valueFrom: '$(self.id) $(self.species)'}
baseCommand: echo
stdout: said.txt
outputs:
  said: stdout
