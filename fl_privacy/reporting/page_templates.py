"""The report pages' Jinja2 templates.

Kept in a Python module, not as ``.html`` package data: Flower builds the app bundle (FAB) that
the Deployment Engine ships to the SuperLink from ``*.py/*.toml/*.md/*.yaml/*.json`` files only
(a non-overridable rule of ``flwr build``), and the ServerApp there writes these pages.
"""

TEMPLATES: dict[str, str] = {}

TEMPLATES['base.html'] = r'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329; background: #fff;
         max-width: 1180px; margin: 0 auto; padding: 1.2em 1.6em 4em; }
  h1 { font-size: 1.6em; margin-bottom: .2em; }
  h2 { font-size: 1.25em; border-bottom: 1px solid #d5dbe1; padding-bottom: .2em; margin-top: 2em; }
  h3 { font-size: 1.05em; margin-top: 1.4em; }
  .status { color: #4b5965; margin-top: 0; }
  table { border-collapse: collapse; margin: .6em 0 1em; font-size: .9em; }
  th, td { border: 1px solid #d5dbe1; padding: .25em .55em; text-align: right; vertical-align: top; }
  th { background: #f1f4f7; }
  td:first-child, th:first-child, table.kv td, table.kv th, td.text { text-align: left; }
  table.kv th { font-weight: 600; white-space: nowrap; }
  figure { display: inline-block; margin: .4em 1em 1em 0; vertical-align: top; }
  figure img { max-width: 100%; border: 1px solid #e3e7eb; }
  figcaption { font-size: .82em; color: #4b5965; }
  .granted { color: #a3361f; font-weight: 600; }
  .denied { color: #2f6b3a; }
  .note { background: #fff8e5; border-left: 3px solid #e0b341; padding: .3em .7em; margin: .4em 0; }
  .missing { color: #a3361f; }
  .victim { border: 1px solid #e3e7eb; border-radius: 4px; padding: .5em 1em; margin: 1em 0; }
  code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .88em; }
  pre { background: #f6f8fa; padding: .7em; overflow-x: auto; }
  details summary { cursor: pointer; color: #2b5d8a; }
  .columns { display: flex; flex-wrap: wrap; gap: 2em; }
  .columns > div { flex: 1 1 480px; min-width: 0; }
  .small { font-size: .85em; color: #4b5965; }
</style>
</head>
<body>
{% block body %}{% endblock %}
<p class="small">Written {{ written }} by fl-privacy. Self-contained: every picture is inside this file.</p>
</body>
</html>
'''

TEMPLATES['run.html'] = r'''{% extends "base.html" %}
{% block body %}
<h1>{{ title }}</h1>
<p class="status">{{ status }} · <code>{{ root }}</code></p>

<table class="kv">
{% for name, text in setting %}<tr><th>{{ name }}</th><td>{{ text }}</td></tr>
{% endfor %}
</table>

<h2>Threat model</h2>
<p>{{ threat.observes }}</p>
<p>Attacks run by the server:</p>
<ul>{% for a in threat.attacks %}<li>{{ a }}</li>{% endfor %}</ul>
<table class="kv">
<tr><th>knowledge</th><th>granted?</th><th>what it means</th></tr>
{% for k in threat.knowledge %}
<tr><td><code>attack.threat.{{ k.name }}</code></td>
<td class="{{ 'granted' if k.granted else 'denied' }}">{{ 'granted' if k.granted else 'not granted' }}</td>
<td>{{ k.what }}</td></tr>
{% endfor %}
</table>

<h2>Defenses and privacy guarantee</h2>
{% if defenses %}
<p>Each client applies these stages to its update, in order, before sending it:</p>
<table class="kv">
<tr><th>#</th><th>defense</th><th>parameters</th></tr>
{% for d in defenses %}<tr><td>{{ loop.index }}</td><td>{{ d.name }}</td><td>{{ d.params | pretty }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No defense: clients send their updates as computed.</p>
{% endif %}
{% if privacy.state == "given" %}
<p>Formal guarantee of what ran (from <code>final.json</code>):</p>
<table class="kv">
{% for name, value in privacy.fields %}<tr><th>{{ name }}</th><td>{{ value | pretty }}</td></tr>
{% endfor %}
</table>
{% elif privacy.state == "pending" %}
<p>The privacy guarantee, if any, is recorded when the run finishes.</p>
{% else %}
<p>No formal privacy guarantee: no stage of this pipeline (as run) gives one.</p>
{% endif %}

<h2>Rounds</h2>
<table>
<tr>{% for h in rounds.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rounds.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% for p in plots %}
<figure><img src="{{ p.src }}" alt="{{ p.caption }}"><figcaption>{{ p.caption }} ({{ p.file }})</figcaption></figure>
{% endfor %}

{% if victims %}
<h2>Attacked victims: originals vs reconstructions</h2>
{% for v in victims %}
<div class="victim">
<h3>Round {{ v.round }}, client {{ v.client }}{% if v.images %}: {{ v.images }} image(s){% endif %}</h3>
{% if v.error %}<p class="note">The attack failed: {{ v.error }}</p>{% endif %}
<table>
<tr><th>PSNR dB</th><th>SSIM</th><th>LPIPS</th><th>MSE</th><th>iterations</th><th>attack s</th><th>s/iter</th></tr>
<tr><td>{{ v.psnr | num }}</td><td>{{ v.ssim | num }}</td><td>{{ v.lpips | num if v.lpips is not none else 'unavailable' }}</td>
<td>{{ v.mse | num }}</td><td>{{ v.iterations | num }}</td><td>{{ v.seconds | num }}</td><td>{{ v.per_iteration | num }}</td></tr>
</table>
{% if v.labels %}
<p><b>Label inference</b> ({{ v.labels.how }}): true labels {{ v.labels.true | pretty }}; labels the attack used
{{ v.labels.used | pretty }}; label accuracy {{ v.labels.accuracy | num }}.</p>
{% endif %}
{% for n in v.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if v.grid %}<figure><img src="{{ v.grid.src }}" alt="{{ v.grid.caption }}"><figcaption>{{ v.grid.caption }}</figcaption></figure>{% endif %}
{% if v.trace %}<figure><img src="{{ v.trace.src }}" alt="{{ v.trace.caption }}"><figcaption>{{ v.trace.caption }}</figcaption></figure>{% endif %}
</div>
{% endfor %}
{% endif %}

{% if mia or gradient_mia %}
<h2>Membership inference</h2>
{% for m in mia %}
<h3>Global model after round {{ m.round }}: {{ m.members }} members vs {{ m.nonmembers }} non-members</h3>
<div class="columns"><div>
<table>
<tr><th>attack</th><th>AUC</th><th>TPR @ 1% FPR</th><th>TPR @ 0.1% FPR</th></tr>
{% for a in m.attacks %}<tr><td>{{ a.name }}</td><td>{{ a.auc | num }}</td><td>{{ a.tpr_at_1pct_fpr | num }}</td><td>{{ a['tpr_at_0.1pct_fpr'] | num }}</td></tr>
{% endfor %}
</table>
{% for w in m.warnings %}<p class="note">{{ w }}</p>{% endfor %}
</div><div>
{% if m.roc %}<figure><img src="{{ m.roc.src }}" alt="{{ m.roc.caption }}"><figcaption>{{ m.roc.caption }}</figcaption></figure>{% endif %}
</div></div>
{% endfor %}
{% if gradient_mia %}
<h3>Single updates (gradient similarity of candidates to the victim's update)</h3>
<table>
<tr><th>round</th><th>client</th><th>members</th><th>non-members</th><th>AUC</th><th>TPR @ 1% FPR</th></tr>
{% for v in gradient_mia %}<tr><td>{{ v.round }}</td><td>{{ v.partition_id }}</td><td>{{ v.gradient_mia_members }}</td>
<td>{{ v.gradient_mia_nonmembers }}</td><td>{{ v.gradient_mia_auc | num }}</td><td>{{ v.gradient_mia_tpr_at_1pct_fpr | num }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% endif %}

<h2>Costs</h2>
<table class="kv">
{% for name, value in costs %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>
{% endfor %}
</table>

<h2>Configuration and environment</h2>
<details><summary>resolved config (config.yaml)</summary><pre>{{ config_text }}</pre></details>
<details><summary>environment (environment.json, secrets redacted)</summary>
<table class="kv">{% for k, v in environment.items() %}<tr><th>{{ k }}</th><td>{{ v | pretty }}</td></tr>{% endfor %}</table>
</details>
{% endblock %}
'''

TEMPLATES['experiment.html'] = r'''{% extends "base.html" %}
{% block body %}
<p class="status">{{ title }} · {{ status }}</p>
{{ results_html | safe }}

<h2>The papers' numbers</h2>
{% if papers %}
<p class="small">From <code>{{ papers.source }}</code>: the recorded quick-profile results of this file, the paper's
numbers and how they compare (written when that section was last measured; the tables above are this run's).</p>
<div class="note">{{ papers.html | safe }}</div>
{% elif paper %}
<p>Paper: {{ paper }}. No section of <code>experiments/RESULTS.md</code> names this file yet.</p>
{% else %}
<p>This experiment does not name a paper.</p>
{% endif %}

<h2>Points: one example each, costs and the runs' own pages</h2>
<table>
<tr><th>point</th><th class="text">settings</th><th>runs</th><th>wall s (sum)</th><th>s/iter (mean)</th><th>bytes/client/round</th><th>run pages</th></tr>
{% for p in points %}
<tr><td>{{ p.index }}</td><td class="text">{{ p.label }}</td><td>{{ p.runs }}</td><td>{{ p.costs.seconds }}</td>
<td>{{ p.costs.per_iteration }}</td><td>{{ p.costs.bytes }}</td>
<td>{% for link in p.links %}<a href="{{ link }}">{{ loop.index }}</a> {% endfor %}</td></tr>
{% endfor %}
</table>
{% for p in points if p.example %}
<figure style="max-width: 380px"><img src="{{ p.example.src }}" alt="point {{ p.index }}">
<figcaption>point {{ p.index }} ({{ p.label }}): {{ p.example.caption }}</figcaption></figure>
{% endfor %}

{{ tail_html | safe }}
{% endblock %}
'''
