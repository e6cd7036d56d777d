"""Experiment files: one YAML per research question, a sweep over config keys.

An experiment file is a normal config file (its ``base`` section) plus an
``experiment`` section that says what to sweep, how often to repeat it, which
victims to attack and which table and figure answer the question::

    experiment:
      name: rq1_minibatch_schedule
      question: Does knowing the mini-batch schedule help the attacker?
      mode: attack                      # attack | federation
      victims: {split: test, indices: [3, 10, 21, 30], group: 1, count: 4}
      sweep:
        training.local_steps: [1, 2, 4]
        attack.threat.schedule: [true, false]
      seeds: [0]
      table: {rows: training.local_steps, columns: attack.threat.schedule, metrics: [ssim_mean]}
      figure: {x: training.local_steps, y: ssim_mean, hue: attack.threat.schedule}
      profiles:
        quick: {set: {attack.gia.iterations: 100}, victims: {count: 1}}
        full: {}
    base:
      data: {dataset: cifar10}

Modules: ``schema`` (the file format, one pydantic model per section, unknown keys refused),
``load`` (read and resolve: ``load_experiment``, ``is_experiment_file``), ``profiles`` (profile
and ``--set`` merging), ``sweep`` (axes -> points -> units), ``victims``, ``layout`` (tables and
figures), ``preflight`` (data checks before the first run), ``model`` (the resolved ``Experiment``),
``names`` (modes, metrics, reserved columns), ``errors`` (schema errors as messages naming the fix).
"""
