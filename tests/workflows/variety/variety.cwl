#!/usr/bin/env cwl-runner
# Cases lando-ssh once got wrong, in one run (tests/test_cwl_variety.py compares it with bare cwltool):
# - one tool shared by two steps through a YAML anchor: cwltool's pack left `$import`s of ids it
#   never defined, so the VM could not load the packed workflow;
# - a workflow output named `docs`: lando's own docs/ was written into it;
# - `$schemas` naming a local ontology file for `format` checks: it was not staged to the VM;
# - a record type from SchemaDefRequirement whose File field has secondaryFiles: they were not staged;
# - a secondaryFiles pattern that is an expression (reads): staging cannot evaluate it, so the file
#   stayed behind; the server now finds it at submit, as cwltool does, and lists it in the job order.
cwlVersion: v1.2
class: Workflow
$namespaces:
  edam: http://edamontology.org/
$schemas:
  - formats.owl
requirements:
  ScatterFeatureRequirement: {}
  InlineJavascriptRequirement: {}
  SchemaDefRequirement:
    types:
      - $import: types.yml
inputs:
  reads:
    type: File
    format: edam:format_2330
    secondaryFiles: ["${ return self.nameroot + '.idx'; }"]
  words: string[]
  sample: types.yml#Sample
outputs:
  first: {type: File, outputSource: upper_reads/upper}
  second: {type: File, outputSource: upper_again/upper}
  docs: {type: Directory, outputSource: write_docs/docs}
  notes: {type: File, outputSource: write_docs/notes}
  lengths: {type: 'int[]', outputSource: measure/length}
  sample_dir: {type: File, outputSource: list_sample/listing}
steps:
  upper_reads:
    in: {text: reads}
    out: [upper]
    run: &upper
      class: CommandLineTool
      inputs:
        text: {type: File, format: edam:format_1915}
      baseCommand: [tr, a-z, A-Z]
      stdin: $(inputs.text.path)
      stdout: $(inputs.text.nameroot).upper.txt
      outputs:
        upper: {type: stdout, format: edam:format_1929}
  upper_again:
    in: {text: upper_reads/upper}
    out: [upper]
    run: *upper
  write_docs:
    in: {reads: reads}
    out: [docs, notes]
    run:
      class: CommandLineTool
      inputs:
        reads: {type: File, secondaryFiles: [^.idx]}
      baseCommand: [sh, -c, 'mkdir docs && echo "the workflow own docs" > docs/README.md && cat "$0" "$1" > notes.txt']
      arguments:
        - $(inputs.reads.path)
        - $(inputs.reads.secondaryFiles[0].path)
      outputs:
        docs: {type: Directory, outputBinding: {glob: docs}}
        notes: {type: File, outputBinding: {glob: notes.txt}}
  measure:
    scatter: word
    in: {word: words}
    out: [length]
    run:
      class: ExpressionTool
      inputs: {word: string}
      outputs: {length: int}
      expression: '$({"length": inputs.word.length})'
  list_sample:
    in: {sample: sample}
    out: [listing]
    run:
      class: CommandLineTool
      inputs:
        sample: types.yml#Sample
      baseCommand: [sh, -c, 'ls "$(dirname "$0")" > sample_dir.txt']
      arguments: [$(inputs.sample.reads.path)]
      outputs:
        listing: {type: File, outputBinding: {glob: sample_dir.txt}}
