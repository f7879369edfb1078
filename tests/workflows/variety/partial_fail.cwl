# Steps written ok, fail, later: cwltool runs ok before fail fails (its pack sorts them: fail, later, ok)
cwlVersion: v1.2
class: Workflow
inputs:
  msg: string
outputs:
  good: {type: File, outputSource: ok/out}
  bad: {type: File?, outputSource: fail/out}
  after: {type: File?, outputSource: later/out}
steps:
  ok:
    run:
      class: CommandLineTool
      baseCommand: echo
      inputs: {m: {type: string, inputBinding: {position: 1}}}
      stdout: ok.txt
      outputs: {out: stdout}
    in: {m: msg}
    out: [out]
  fail:
    run:
      class: CommandLineTool
      baseCommand: [sh, -c, "echo partial > fail.txt; exit 3"]
      inputs: {m: string}
      outputs: {out: {type: File, outputBinding: {glob: fail.txt}}}
    in: {m: msg}
    out: [out]
  later:
    run:
      class: CommandLineTool
      baseCommand: cat
      inputs: {f: {type: File, inputBinding: {position: 1}}}
      stdout: later.txt
      outputs: {out: stdout}
    in: {f: fail/out}
    out: [out]
