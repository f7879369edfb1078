#!/usr/bin/env cwl-runner
# A workflow output and a step share the name `greeting`: cwltool runs this file (warning that the
# id is defined twice). cwltool's own pack made the second object of that id an $import of the first,
# so its packed form, which a VM runs, did not load; lando-ssh packs it with both. (Whether cwltool's
# pack breaks depends on how the ids sort: keep this file's name after greet.cwl's.)
cwlVersion: v1.2
class: Workflow
inputs:
  name: string
  file: File
outputs:
  greeting: {type: File, outputSource: greeting/greeting}
steps:
  greeting:
    run: greet.cwl
    in: {name: name, file: file}
    out: [greeting]
