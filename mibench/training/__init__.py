"""The shared training machinery: the classifier loop, defense stacks, augmentation, trapdoors, adversarial.

`classifier` is the one training loop of targets, evaluators and distilled surrogates; `stack` applies stacked
defenses' changes and trains with that loop unless a defense brings its own; `augmentation`, `trapdoor` and
`adversarial` are the pieces Trap-MID, PLG-MI, PPA and the trapdoor-detection metric share. This package may import
`mibench.api`, the models, data and base modules, never the methods that use it.
"""
