#!/usr/bin/env cwl-runner
# Defaults cwltool never uses, naming what is not there: one the job order overrides, one of a tool
# input its step connects, one of an input nothing reads (a keep: location) -- and one it uses.
cwlVersion: v1.2
class: Workflow
inputs:
  text:
    type: File
    default: {class: File, location: data/not-here.txt}
  unread:
    type: File
    default: {class: File, location: "keep:99999999999999999999999999999999+118/token.txt"}
outputs:
  joined:
    type: File
    outputSource: join/joined
steps:
  join:
    in:
      text: text
      extra: {default: {class: File, location: data/reference.txt}}
    out: [joined]
    run:
      class: CommandLineTool
      baseCommand: cat
      inputs:
        text:
          type: File
          default: {class: File, location: data/not-here-either.txt}
          inputBinding: {position: 1}
        extra: {type: File, inputBinding: {position: 2}}
      outputs:
        joined: stdout
      stdout: joined.txt
