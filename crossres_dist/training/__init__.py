"""Training: the trainer that wires the components (``trainer``), the loop's step control
(``step_control``), the state a checkpoint resumes (``state``), validation (``validation``,
``batchnorm``), the optimizer and schedule (``optimizer``), the student and the teacher
(``student_teacher``) and the objective (``objective``)."""
