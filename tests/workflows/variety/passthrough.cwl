cwlVersion: v1.2
doc: Hands its input back as its output; cwltool copies the file into the output dir.
class: ExpressionTool
requirements: {InlineJavascriptRequirement: {}}
inputs: {f: File}
outputs: {o: File}
expression: "$({o: inputs.f})"
