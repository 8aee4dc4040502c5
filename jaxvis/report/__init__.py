"""What users see of a results file: pictures (``render``), the HTML report (``pages``, with
``html`` and ``svg``), the comparison of two files (``compare``) and the console summary lines and
read-out tables (``summary``). Reading, rendering and reporting import no optimiser."""
